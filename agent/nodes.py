"""The episode graph's nodes, one function each: ``async def node(deps, state) -> state update``.

:func:`agent.graph.build_episode_graph` wires them (and the router below) into the LangGraph
``StateGraph``; this module holds what each node does, so a node's logic is one function to read or
change. Conversation shapes (the trainer relies on them; see memory/records.py):

    solve   = task prompt (+ retrieved hints in the last user message)
    reflect = solve.messages + [assistant: solve.output] + [user: REFLECT(feedback)]
    retry   = fresh (default): [system] + [user: question + feedback + reflection + answer instruction]
              conversation (R3's): reflect.messages + [assistant: reflection] + [user: RETRY]
    (either way the retry call records where the reflection sits: ModelCall.reflection_slot)
    critique (a side conversation, recorded, never fed back) = solve.messages + [assistant: answer] + [user: CRITIQUE]

A wrong or malformed answer is data (``Feedback``) shown to the reflect node; an exception from the
policy or our code propagates to the runner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Literal

from agent import prompts
from environments import Task
from memory.records import Attempt, Episode, ModelCall, cap_attempt

if TYPE_CHECKING:
    from agent.graph import EpisodeConfig, EpisodeState, GraphDeps
    from memory.protocol import Library

log = logging.getLogger(__name__)


async def _call(deps: GraphDeps, node: str, messages: list[dict[str, str]], seed: int | None,
                slot: prompts.Slot | None = None) -> ModelCall:
    start = time.perf_counter()
    [completion] = await deps.policy.generate([messages], deps.config.params(node, seed))
    return ModelCall(
        node=node,  # type: ignore[arg-type]
        messages=messages,
        output=completion.text,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        finish_reason=completion.finish_reason,
        model_version=completion.model_version or deps.policy.version,
        latency_s=time.perf_counter() - start,
        reflection_slot=slot,
    )


def _seed(state: EpisodeState, offset: int) -> int | None:
    seed = state.get("seed")
    return None if seed is None else seed * 101 + offset


def find_hints(cfg: EpisodeConfig, library: Library, task: Task) -> dict:
    """Up to ``k`` past successes similar to ``task``: their hint text and episode ids.

    The hint text and the fields the filters need (task id, split) come from the index's metadata; a
    vector indexed before the metadata carried them is checked against its episode in SQLite instead. Ray's
    driver calls it too, before it sends the task to a worker (agent/scale/driver.py)."""
    hints, ids = [], []
    for hit in library.search(task.question, env=task.env, success=True, k=cfg.k * 3):
        if hit.score < cfg.min_hint_score:
            continue
        task_id, split, hint = hit.task_id, hit.split, hit.hint
        if not (task_id and split):
            past = library.get(hit.episode_id)
            task_id, split, hint = past.task.id, past.task.split, past.hint_text()
        # Never show the same task, and never show held-out tasks (that would leak eval answers).
        if task_id == task.id or split != "train":
            continue
        hints.append(hint)
        ids.append(hit.episode_id)
        if len(ids) == cfg.k:
            break
    return {"hints": hints, "retrieved_ids": ids}


async def retrieve(deps: GraphDeps, state: EpisodeState) -> dict:
    cfg = deps.config
    if not (cfg.retrieval and cfg.k > 0):
        return {"hints": [], "retrieved_ids": []}
    if deps.library is None:  # no library here: keep the hints a driver that holds one chose (agent/scale), if any
        return {"hints": state.get("hints", []), "retrieved_ids": state.get("retrieved_ids", [])}
    # Embedding the query and searching take milliseconds; off the event loop, so the other
    # episodes keep submitting and the micro-batcher keeps merging their requests meanwhile.
    return await asyncio.to_thread(find_hints, cfg, deps.library, state["task"])


async def solve(deps: GraphDeps, state: EpisodeState) -> dict:
    messages = state["task"].messages()
    if state.get("hints"):
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[last_user] = {"role": "user", "content": prompts.with_hints(messages[last_user]["content"], state["hints"])}
    return {"solve": await _call(deps, "solve", messages, _seed(state, 0)), "critique": None, "verdict": None}


async def critique(deps: GraphDeps, state: EpisodeState) -> dict:
    solve_call = state["solve"]
    messages = [*solve_call.messages, {"role": "assistant", "content": solve_call.output}, {"role": "user", "content": prompts.CRITIQUE}]
    call = await _call(deps, "critique", messages, None)
    return {"critique": call, "verdict": prompts.parse_verdict(call.output)}


async def verify(deps: GraphDeps, state: EpisodeState) -> dict:
    solve_call = state["solve"]
    ground_truth = None
    if deps.feedback is None:
        feedback = deps.environment.verify(state["task"], solve_call.output)
    else:
        feedback, ground_truth = await deps.feedback.score(state["task"], solve_call.output, deps)
    attempt = Attempt(
        index=len(state.get("attempts", [])),
        solve=solve_call,
        answer=feedback.answer,
        feedback=feedback,
        critique=state.get("critique"),
        critique_verdict=state.get("verdict"),
        ground_truth=ground_truth,
    )
    return {"attempts": [*state.get("attempts", []), attempt], "feedback": feedback}


async def reflect(deps: GraphDeps, state: EpisodeState) -> dict:
    attempts = list(state["attempts"])
    last = attempts[-1]
    messages = prompts.reflect_messages(last.solve.messages, last.solve.output, last.feedback.message)
    call = await _call(deps, "reflect", messages, _seed(state, len(attempts) * 10 + 5))
    attempts[-1] = last.model_copy(update={"reflect": call})
    return {"attempts": attempts}


async def retry(deps: GraphDeps, state: EpisodeState) -> dict:
    """The next attempt, seeing what ``config.retry_design`` says (agent/prompts.py; measured in
    docs/reflection.md): ``fresh`` = one new turn with the question, the feedback and the reflection."""
    last = state["attempts"][-1]
    if last.reflect is None:  # our bug, not the model's
        raise RuntimeError("retry reached without a reflection on the previous attempt")
    task = state["task"]
    system = task.prompt[0].content if task.prompt and task.prompt[0].role == "system" else None
    messages, slot = prompts.retry_messages(
        deps.config.retry_design, last.reflect.messages, last.reflect.output, question=task.question, system=system,
        feedback=last.feedback.message, answer_instruction=deps.environment.answer_instruction,
    )
    call = await _call(deps, "retry", messages, _seed(state, len(state["attempts"]) * 10), slot=slot)
    return {"solve": call, "critique": None, "verdict": None}


async def record(deps: GraphDeps, state: EpisodeState) -> dict:
    task = state["task"]
    attempts = [cap_attempt(a, deps.config.max_stored_chars) for a in state["attempts"]]
    cut = sum(len(a.truncated) for a in attempts)
    if cut:
        log.warning("episode %s: %d text field(s) over max_stored_chars=%d were cut before storing (Attempt.truncated)",
                    state["episode_id"], cut, deps.config.max_stored_chars)
    episode = Episode(
        id=state["episode_id"],
        run_id=state.get("run_id"),
        env=task.env,
        task=task,
        model_version=deps.policy.version,
        feedback_source=deps.feedback.name if deps.feedback is not None else "verifier",
        attempts=attempts,
        retrieved_ids=state.get("retrieved_ids", []),
        seconds=time.time() - state["started_at"],
        purpose=state.get("purpose", "train"),
        metadata=state.get("metadata", {}),
    )
    if deps.config.record and deps.library is not None:
        await asyncio.to_thread(deps.library.record, episode)  # SQLite + embedding + upsert, off the loop
    return {"episode": episode}


def route_after_verify(config: EpisodeConfig, state: EpisodeState) -> Literal["record", "reflect"]:
    """The pure router: stop on success or at the attempt bound, else reflect (and then retry)."""
    attempts = state["attempts"]
    if attempts[-1].feedback.success or len(attempts) >= config.max_attempts:
        return "record"
    return "reflect"


NODES = {"retrieve": retrieve, "solve": solve, "critique": critique, "verify": verify, "reflect": reflect,
         "retry": retry, "record": record}

"""The episode graph: retrieve → solve → critique → verify → (reflect → retry → critique → verify)* → record.

A LangGraph ``StateGraph`` with a typed state, named nodes, one pure router and an explicit bound on
attempts (after the LangGraph reflexion tutorial). Each node that calls the model stores the exact
messages it sent and the text it got back as a :class:`memory.records.ModelCall`, because training
later needs the exact prompts.

Conversation shape (the trainer relies on it, see memory/records.py):

    solve  = task prompt (+ retrieved hints in the first user message)
    reflect = solve.messages + [assistant: solve.output] + [user: REFLECT(feedback)]
    retry  = reflect.messages + [assistant: reflection] + [user: RETRY]

The critique is a side conversation (solve.messages + answer + CRITIQUE); it is recorded but not fed
back, so the retry prompt stays the R3 one. A wrong or malformed answer is data (``Feedback``) shown to
the reflect node; an exception from the policy or our code propagates to the runner.

    selfevolve run --env arithmetic --episodes 16
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from agent import prompts
from agent.policy.base import Policy, SamplingParams
from environments import Environment, Feedback, Task
from memory.protocol import Library
from memory.records import Attempt, Episode, ModelCall, Purpose, new_id

log = logging.getLogger(__name__)


class EpisodeConfig(BaseModel):
    """What the graph does; every field is settable from the CLI and the daemon config."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=2, ge=1, le=10, description="1 = no retry; 2 = one reflect+retry (R3).")
    critique: bool = Field(default=True, description="Ask the model to judge its own answer (recorded, not fed back).")
    retrieval: bool = Field(default=True, description="Show similar past successes from memory as hints.")
    k: int = Field(default=2, ge=0, le=10, description="How many past successes to show.")
    min_hint_score: float = Field(default=0.3, ge=-1, le=1, description="Cosine similarity below which a hit is not shown.")
    temperature: float = Field(default=0.7, ge=0, le=2, description="Sampling temperature for solve/retry/reflect.")
    top_p: float = Field(default=0.95, gt=0, le=1)
    solve_tokens: int = Field(default=128, ge=1, description="Max new tokens of a solve or retry.")
    critique_tokens: int = Field(default=32, ge=1)
    reflect_tokens: int = Field(default=96, ge=1)
    record: bool = Field(default=True, description="Write the episode to the experience library.")

    def params(self, node: str, seed: int | None = None) -> SamplingParams:
        if node == "critique":
            return SamplingParams(max_tokens=self.critique_tokens, temperature=0.0, seed=seed)
        tokens = self.reflect_tokens if node == "reflect" else self.solve_tokens
        return SamplingParams(max_tokens=tokens, temperature=self.temperature, top_p=self.top_p, seed=seed)


class EpisodeState(TypedDict, total=False):
    episode_id: str
    run_id: str | None
    task: Task
    seed: int | None
    started_at: float
    hints: list[str]
    retrieved_ids: list[str]
    attempts: list[Attempt]
    # the attempt in progress
    solve: ModelCall | None
    critique: ModelCall | None
    verdict: bool | None
    feedback: Feedback | None
    episode: Episode | None
    purpose: Purpose
    metadata: dict[str, Any]


class FeedbackSource(Protocol):
    """Where an attempt's reward comes from. ``None`` in GraphDeps means the environment's verifier.

    Returns (feedback the agent acts on, hidden ground truth or None). Self-reward sources (majority
    vote, rubric self-grading, the critique verdict) return the verifier's verdict as ground truth
    when the environment has one, so the generation–verification gap can be measured.
    """

    name: str

    async def score(self, task: Task, output: str, deps: GraphDeps) -> tuple[Feedback, Feedback | None]: ...


@dataclass
class GraphDeps:
    policy: Policy
    env: Environment
    config: EpisodeConfig
    library: Library | None = None  # None: no hints, nothing recorded
    feedback: FeedbackSource | None = None


async def _call(deps: GraphDeps, node: str, messages: list[dict[str, str]], seed: int | None) -> ModelCall:
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
    )


def _seed(state: EpisodeState, offset: int) -> int | None:
    seed = state.get("seed")
    return None if seed is None else seed * 101 + offset


def build_episode_graph(deps: GraphDeps, checkpointer: Any = None):
    """Compile the episode graph. ``checkpointer`` (e.g. LangGraph's SqliteSaver) makes it resumable."""
    cfg = deps.config

    def _retrieve_sync(task: Task) -> dict:
        hits = deps.library.search(task.question, env=task.env, success=True, k=cfg.k * 3)
        hints, ids = [], []
        for hit in hits:
            if hit.score < cfg.min_hint_score:
                continue
            past = deps.library.get(hit.episode_id)
            # Never show the same task, and never show held-out tasks (that would leak eval answers).
            if past.task.id == task.id or past.task.split != "train":
                continue
            hints.append(past.hint_text())
            ids.append(hit.episode_id)
            if len(ids) == cfg.k:
                break
        return {"hints": hints, "retrieved_ids": ids}

    async def retrieve(state: EpisodeState) -> dict:
        if not (cfg.retrieval and cfg.k > 0 and deps.library is not None):
            return {"hints": [], "retrieved_ids": []}
        # Embedding the query and reading SQLite take milliseconds; off the event loop, so the other
        # episodes keep submitting and the micro-batcher keeps merging their requests meanwhile.
        return await asyncio.to_thread(_retrieve_sync, state["task"])

    async def solve(state: EpisodeState) -> dict:
        messages = state["task"].messages()
        if state.get("hints"):
            last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[last_user] = {"role": "user", "content": prompts.with_hints(messages[last_user]["content"], state["hints"])}
        return {"solve": await _call(deps, "solve", messages, _seed(state, 0)), "critique": None, "verdict": None}

    async def retry(state: EpisodeState) -> dict:
        reflect = state["attempts"][-1].reflect
        if reflect is None:  # our bug, not the model's
            raise RuntimeError("retry reached without a reflection on the previous attempt")
        instruction = prompts.RETRY.format(answer_instruction=deps.env.answer_instruction).strip()
        messages = [*reflect.messages, {"role": "assistant", "content": reflect.output}, {"role": "user", "content": instruction}]
        call = await _call(deps, "retry", messages, _seed(state, len(state["attempts"]) * 10))
        return {"solve": call, "critique": None, "verdict": None}

    async def critique(state: EpisodeState) -> dict:
        solve_call = state["solve"]
        messages = [*solve_call.messages, {"role": "assistant", "content": solve_call.output}, {"role": "user", "content": prompts.CRITIQUE}]
        call = await _call(deps, "critique", messages, None)
        return {"critique": call, "verdict": prompts.parse_verdict(call.output)}

    async def verify(state: EpisodeState) -> dict:
        solve_call = state["solve"]
        ground_truth = None
        if deps.feedback is None:
            feedback = deps.env.verify(state["task"], solve_call.output)
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

    async def reflect(state: EpisodeState) -> dict:
        attempts = list(state["attempts"])
        last = attempts[-1]
        messages = [
            *last.solve.messages,
            {"role": "assistant", "content": last.solve.output},
            {"role": "user", "content": prompts.REFLECT.format(feedback=last.feedback.message)},
        ]
        call = await _call(deps, "reflect", messages, _seed(state, len(attempts) * 10 + 5))
        attempts[-1] = last.model_copy(update={"reflect": call})
        return {"attempts": attempts}

    async def record(state: EpisodeState) -> dict:
        task = state["task"]
        episode = Episode(
            id=state["episode_id"],
            run_id=state.get("run_id"),
            env=task.env,
            task=task,
            model_version=deps.policy.version,
            feedback_source=deps.feedback.name if deps.feedback is not None else "verifier",
            attempts=state["attempts"],
            retrieved_ids=state.get("retrieved_ids", []),
            seconds=time.time() - state["started_at"],
            purpose=state.get("purpose", "train"),
            metadata=state.get("metadata", {}),
        )
        if cfg.record and deps.library is not None:
            await asyncio.to_thread(deps.library.record, episode)  # SQLite + embedding + upsert, off the loop
        return {"episode": episode}

    def route_after_verify(state: EpisodeState) -> Literal["record", "reflect"]:
        attempts = state["attempts"]
        if attempts[-1].feedback.success or len(attempts) >= cfg.max_attempts:
            return "record"
        return "reflect"

    after_answer = "critique" if cfg.critique else "verify"
    graph = StateGraph(EpisodeState)
    graph.add_node("retrieve", retrieve)
    graph.add_node("solve", solve)
    graph.add_node("critique", critique)
    graph.add_node("verify", verify)
    graph.add_node("reflect", reflect)
    graph.add_node("retry", retry)
    graph.add_node("record", record)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "solve")
    graph.add_edge("solve", after_answer)
    graph.add_edge("retry", after_answer)
    graph.add_edge("critique", "verify")
    graph.add_conditional_edges("verify", route_after_verify, {"record": "record", "reflect": "reflect"})
    graph.add_edge("reflect", "retry")
    graph.add_edge("record", END)
    return graph.compile(checkpointer=checkpointer)


def initial_state(
    task: Task,
    run_id: str | None = None,
    seed: int | None = None,
    episode_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    purpose: Purpose = "train",
) -> EpisodeState:
    return EpisodeState(
        episode_id=episode_id or new_id("ep"),
        run_id=run_id,
        task=task,
        seed=seed,
        started_at=time.time(),
        hints=[],
        retrieved_ids=[],
        attempts=[],
        solve=None,
        critique=None,
        verdict=None,
        feedback=None,
        episode=None,
        purpose=purpose,
        metadata=dict(metadata or {}),
    )


def recursion_limit(config: EpisodeConfig) -> int:
    """Node visits per episode: retrieve, solve, record + per attempt (critique, verify) + per retry (reflect, retry)."""
    return 3 + 2 * config.max_attempts + 2 * (config.max_attempts - 1) + 5

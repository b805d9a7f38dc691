"""``POST /v1/feedback``: a user's verdict turns a served completion into an episode.

What the trainer's dataset builders (trainer/datasets.py) need, and what the episode holds:
- One attempt whose ``solve`` call is the exact prompt the model saw (``prompt_messages``, retrieved
  hints included) and its output, so ``sft_dataset`` trains on rated successes and ``dpo_dataset`` pairs
  a success with a failure of the same conversation: the task id is a hash of the messages the client
  sent, so two rated choices (``n=2``, or the same question asked twice) share a task.
- ``feedback_source="user"``: not the verifier, so no builder re-verifies it with an environment
  (``served`` has none). When the client names a registered environment and rates a success, the
  extracted answer is the attempt's pseudo-``label``, so plain GRPO (``first_attempt_dataset``) rewards
  agreeing with what the user accepted. R3 (``reflection_dataset``) needs a failed attempt, a
  reflection and a verified retry: one served turn has none of them, so served episodes do not enter it.
- ``split="train"``, ``env`` = ``served`` or the env the client names (at request or feedback time).
- The episode id is derived from (completion id, choice), so recording is idempotent: a crash between
  recording and marking the completion rated, then a retried rating, still leaves one episode.

    curl -s localhost:8000/v1/feedback -d '{"completion_id": "chatcmpl-…", "success": true}'
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from typing import Any

from agent.serve.errors import ApiError
from agent.serve.schemas import FeedbackRequest
from agent.serve.store import ServedCompletion, ServedStore
from environments import Feedback, Task
from memory.records import Attempt, Episode, ModelCall

SERVED_ENV = "served"
FEEDBACK_SOURCE = "user"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@functools.lru_cache(maxsize=64)
def _environment(spec: str) -> Any | None:
    """The registered environment named ``spec``, or None (``served``, or a name nobody registered)."""
    if spec == SERVED_ENV:
        return None
    from environments import get_environment

    try:
        return get_environment(spec)
    except (KeyError, ValueError, ImportError):
        return None


def canonical_env(name: str) -> str:
    """A registered environment's own spec (``arithmetic:digits=1`` is ``arithmetic``: defaults drop out),
    so episodes and retrieval filters use the name the agent records; other names stay as given."""
    environment = _environment(name)
    return environment.spec if environment is not None else name


def build_episode(served: ServedCompletion, req: FeedbackRequest, env: str) -> Episode:
    """The episode of one rated choice (see the module docstring for what each field is for)."""
    success, reward = req.verdict()
    environment = _environment(env)
    env = environment.spec if environment is not None else env
    answer = environment.extract_answer(served.output) if environment is not None else served.output.strip()
    label = None
    if environment is not None and success and answer:
        from environments import normalize_answer

        label = normalize_answer(answer)
    message = req.comment or ("The user accepted this answer." if success else "The user rejected this answer.")
    user_turns = [m["content"] for m in served.request_messages if m["role"] == "user"]
    task = Task(
        id=f"served-{_digest(json.dumps(served.request_messages, sort_keys=True))}", env=env, split="train",
        question=user_turns[-1], prompt=served.request_messages, reference={},
        metadata={"source": "served", "env_registered": environment is not None},
    )
    call = ModelCall(node="solve", messages=served.prompt_messages, output=served.output,
                     prompt_tokens=served.prompt_tokens, completion_tokens=served.completion_tokens,
                     finish_reason=served.finish_reason, model_version=served.version, latency_s=served.latency_s)
    feedback = Feedback(reward=reward, success=success, message=message, answer=answer or None, label=label)
    return Episode(
        id=f"ep-{_digest(f'{served.id}:{served.idx}')}", env=env, task=task, model_version=served.version,
        feedback_source=FEEDBACK_SOURCE, attempts=[Attempt(index=0, solve=call, answer=answer or None, feedback=feedback)],
        retrieved_ids=served.retrieved_ids, seconds=served.latency_s,
        metadata={"purpose": "served", "completion_id": served.id, "choice": served.idx,
                  "served_at": served.created_at, "request_model": served.model, "comment": req.comment},
    )


class FeedbackRecorder:
    """Checks a rating, records its episode in the library, marks the completion rated; one at a time."""

    def __init__(self, store: ServedStore, library: Any) -> None:
        self.store, self.library = store, library
        self._lock = asyncio.Lock()

    async def rate(self, req: FeedbackRequest) -> dict[str, Any]:
        async with self._lock:  # two ratings of one choice never race inside this process
            req.verdict()  # a 400 before anything is looked up or written
            served = self._unrated(req)
            episode = build_episode(served, req, req.env or served.env or SERVED_ENV)
            env = episode.env
            await asyncio.to_thread(self.library.record, episode)
            rating = {"success": episode.success, "reward": episode.attempts[0].feedback.reward, "env": env,
                      "comment": req.comment, "at": time.time()}
            if not self.store.mark_rated(served.id, served.idx, episode.id, rating):
                raise ApiError(409, f"completion {req.completion_id} choice {req.index} was rated meanwhile by another "
                               "process", param="completion_id", code="already_rated")
        return {"object": "feedback", "completion_id": served.id, "index": served.idx, "episode_id": episode.id,
                "env": env, "success": episode.success, "reward": rating["reward"], "model_version": served.version}

    def _unrated(self, req: FeedbackRequest) -> ServedCompletion:
        served = self.store.get(req.completion_id, req.index)
        if served is None:
            choices = self.store.choices(req.completion_id)
            if choices:
                raise ApiError(404, f"completion {req.completion_id} has choices 0..{choices - 1}, not {req.index}",
                               param="index", code="unknown_choice")
            raise ApiError(404, f"no served completion {req.completion_id!r}; pass the `id` of a response of "
                           "/v1/chat/completions", param="completion_id", code="unknown_completion")
        if served.rated_at is not None:
            raise ApiError(409, f"completion {req.completion_id} choice {req.index} was already rated "
                           f"(episode {served.episode_id}); a rating cannot be changed", param="completion_id",
                           code="already_rated")
        return served

"""Small synthetic episodes for the memory tests, built directly from the records (no model, no verifier).

The fixtures these tests share (``embedder``, ``open_library``, ``backend``, ``chroma_server``) are in
``tests/conftest.py``; episodes on real tasks with verified feedback are :mod:`trainer.synthetic`.
"""

from __future__ import annotations

import time

from environments import Feedback, Task
from environments.base import Message
from memory.records import Attempt, Episode, ModelCall

TOPICS = {
    "addition": "What is {a} + {b}?",
    "legs": "How many legs do {a} spiders and {b} dogs have in total?",
    "words": "Sort these words alphabetically: apple{a}, pear{b}, fig.",
}


def make_episode(
    i: int,
    env: str = "arithmetic:digits=2",
    topic: str = "addition",
    first_success: bool = True,
    success: bool | None = None,
    model_version: str = "base",
    run_id: str | None = None,
    episode_id: str | None = None,
    created_at: float | None = None,
    feedback_source: str = "verifier",
    truth: list[bool] | None = None,
) -> Episode:
    """Episode ``i``: one attempt if ``first_success``, else a failed attempt, a reflection and a retry.

    ``truth`` gives the hidden verifier's verdict per attempt (``Attempt.ground_truth``), as a self-reward
    ``feedback_source`` records it."""
    success = first_success if success is None else success
    question = TOPICS[topic].format(a=10 + i, b=20 + 2 * i)
    task = Task(
        id=f"{env}-{topic}-{i}", env=env, split="train", question=question,
        prompt=[Message(role="system", content="Be careful."), Message(role="user", content=question)],
        reference={"answer": str(30 + 3 * i)},
    )
    msgs = task.messages()

    def call(node: str, output: str, messages: list[dict[str, str]]) -> ModelCall:
        return ModelCall(node=node, messages=messages, output=output, prompt_tokens=20, completion_tokens=5,
                         model_version=model_version)

    def fb(ok: bool) -> Feedback:
        return Feedback.correct("42") if ok else Feedback.failure("Wrong: the sum is off by one.", answer="41")

    attempts = [Attempt(index=0, solve=call("solve", "<answer>41</answer>", msgs), answer="41" if not first_success
                        else "42", feedback=fb(first_success))]
    if not first_success:
        reflection = f"I forgot to carry the one in {topic} problem {i}."
        attempts[0].reflect = call("reflect", reflection, msgs + [{"role": "user", "content": "Reflect."}])
        retry_msgs = msgs + [{"role": "assistant", "content": reflection}, {"role": "user", "content": "Try again."}]
        attempts.append(Attempt(index=1, solve=call("retry", "<answer>42</answer>", retry_msgs),
                                answer="42" if success else "40", feedback=fb(success)))
    for attempt, ok in zip(attempts, truth or [], strict=False):  # hidden verifier verdicts (self-reward)
        attempt.ground_truth = fb(ok)
    return Episode(
        id=episode_id or f"ep-{env.replace(':', '_')}-{topic}-{i}", run_id=run_id, env=env, task=task,
        model_version=model_version, attempts=attempts, created_at=created_at or time.time() + i * 1e-3,
        feedback_source=feedback_source,
    )

"""Small synthetic episodes for the memory tests, built directly from the records (no model involved)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from environments import Feedback, Task
from environments.base import Message
from memory.embed import Embedder, default_embedder
from memory.library import ExperienceLibrary
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


# ----- fixtures shared by the memory test modules (import them into the module that uses them) -----

CHROMA_CLI = Path(sys.executable).with_name("chroma")


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real MiniLM embedder, loaded once per session (≈1–2 s)."""
    emb = default_embedder()
    emb.encode(["warm up"])
    return emb


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``chroma run`` server in a subprocess; yields its URL, killed at the end of the session."""
    if not CHROMA_CLI.exists():
        pytest.skip(f"the chroma CLI is not installed at {CHROMA_CLI} (pip install chromadb provides it)")
    port = _free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    log = (data.parent / "chroma-server.log").open("wb")
    proc = subprocess.Popen(
        [str(CHROMA_CLI), "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # not listening yet: poll again until the deadline
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"chroma server did not start (exit {proc.poll()}); see {log.name}")
            time.sleep(0.2)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(params=["embedded", "server"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_library(
    backend: str, tmp_path: Path, embedder: Embedder, request: pytest.FixtureRequest
) -> Iterator[Callable[[], ExperienceLibrary]]:
    """``open_library()`` opens (or re-opens) the library of this test on the chosen backend."""
    url = request.getfixturevalue("chroma_server") if backend == "server" else None
    prefix = f"t{uuid.uuid4().hex[:8]}"  # isolates this test's collections on the shared server
    opened: list[ExperienceLibrary] = []

    def open_() -> ExperienceLibrary:
        lib = ExperienceLibrary(tmp_path / "ws", chroma_url=url, embedder=embedder, collection_prefix=prefix)
        opened.append(lib)
        return lib

    yield open_
    for lib in opened:
        lib.close()

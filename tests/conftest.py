"""Fixtures shared by the whole suite. Everything runs offline: no hub downloads, no Chroma telemetry.

- ``tiny_model_dir`` / ``tiny_model``: a tiny random-weight Llama with the embedded model's tokenizer
  (:func:`trainer.models.make_tiny_model`), built once per session.
- ``embedder``: the real MiniLM embedder, loaded once per session.
- ``library``: a real :class:`memory.library.ExperienceLibrary` in the test's tmp dir (no fakes: every
  test that needs a library uses the one the main path uses).
- ``backend`` / ``chroma_server`` / ``open_library``: the memory conformance suite's Chroma backends
  (embedded ``PersistentClient`` and a real ``chroma run`` server subprocess).

Episode builders are plain functions, not fixtures: :mod:`trainer.synthetic` (real arithmetic tasks,
verified feedback) and :mod:`tests.memory_factories` (records with chosen fields, no verifier).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402

if TYPE_CHECKING:
    from memory.embed import Embedder
    from memory.library import ExperienceLibrary

CHROMA_CLI = Path(sys.executable).with_name("chroma")


# ----- models -----


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("trainer-tiny"))


@pytest.fixture
def tiny_model(tiny_model_dir: Path):
    from trainer.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_dir))


# ----- the experience library -----


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real MiniLM embedder, loaded once per session (≈1–2 s)."""
    from memory.embed import default_embedder

    emb = default_embedder()
    emb.encode(["warm up"])
    return emb


@pytest.fixture
def library(tmp_path: Path, embedder: Embedder) -> Iterator[ExperienceLibrary]:
    """A real experience library in ``tmp_path / "ws"`` (embedded Chroma), closed after the test."""
    from memory.library import ExperienceLibrary

    lib = ExperienceLibrary(tmp_path / "ws", embedder=embedder)
    yield lib
    lib.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``chroma run`` server in a subprocess; yields its URL, killed at the end of the session."""
    import httpx

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
    from memory.library import ExperienceLibrary

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

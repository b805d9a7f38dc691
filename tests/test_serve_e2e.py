"""End to end: ``selfevolve serve`` as a user starts it, on the real embedded model (SmolLM2-135M).

The CLI runs in its own process (real model, real MiniLM embedder, real library), an API key set
through the environment. The official openai client chats, streams and rates an answer; the rating
shows up as an episode through the dashboard's API; SIGTERM stops the server cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.serve_scripted import free_port

pytestmark = pytest.mark.embedded
KEY = "e2e-key"


@pytest.fixture
def served(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SELFEVOLVE_API_KEY": KEY}
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "-w", str(tmp_path / "ws"), "--port", str(port),
                             "--max-tokens-limit", "64", "--log-level", "info"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.seek(0)
            pytest.fail(f"selfevolve serve did not start (exit {proc.poll()}):\n{log.read()[-3000:]}")
        time.sleep(0.2)
    try:
        yield url, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        log.close()


def test_serve_the_embedded_model_and_learn_from_feedback(served):
    url, proc, log = served
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    q = [{"role": "user", "content": "What is 2 + 3? Answer with a number."}]
    r = client.chat.completions.create(model="selfevolve", messages=q, temperature=0, max_tokens=16)
    text = r.choices[0].message.content
    assert text.strip() and r.usage.completion_tokens > 0 and r.model_extra["selfevolve"]["version"] == "base"

    chunks = client.chat.completions.create(model="selfevolve", messages=q, temperature=0, max_tokens=16, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text  # greedy: the same answer

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    auth = {"Authorization": f"Bearer {KEY}"}
    rated = httpx.post(url + "/v1/feedback", json={"completion_id": r.id, "success": True, "comment": "correct"},
                       headers=auth, timeout=120)
    assert rated.status_code == 200, rated.text
    found = httpx.get(url + "/api/episodes", params={"env": "served"}, headers=auth, timeout=60).json()["episodes"]
    assert [e["id"] for e in found] == [rated.json()["episode_id"]] and found[0]["success"] is True
    hits = httpx.get(url + "/api/episodes", params={"q": "adding two and three"}, headers=auth, timeout=60).json()
    assert hits["mode"] == "search" and hits["episodes"][0]["id"] == found[0]["id"]  # indexed with MiniLM

    proc.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises the signal
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    log.seek(0)
    text = log.read()
    assert "Application shutdown complete" in text and "Traceback" not in text, text[-3000:]

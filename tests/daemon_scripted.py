"""Plug-ins that let the real daemon loop run in seconds (see docs/daemon.md, "Plug-ins").

    model = "python:tests.daemon_scripted:policy"          # scripted arithmetic solver, better per version
    embedder = "python:tests.daemon_scripted:HashEmbedder"  # no MiniLM load
    training.trainer = "python:tests.daemon_scripted:fake_train"  # registers a real (tiny) adapter dir

Version ``vNNNN-*`` solves a task on the first try when ``hash(question) % 4 < min(NNNN + 1, 4)``, so
each trained version beats its parent and the gate promotes it. ``DAEMON_TEST_DELAY`` (seconds per
generate call) and ``DAEMON_TEST_TRAIN_DELAY`` (per fake training step) widen the windows a
fault-injection test can kill into.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from agent.policy.base import Chat, Completion, Policy, SamplingParams, parse_model_spec
from tests.scripted import node_of

_Q = re.compile(r"What is ([-+*\d\s]+)\?")


def _level(version: str) -> int:
    m = re.match(r"v(\d+)-", version)
    return min(int(m.group(1)) + 1, 4) if m else 1


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


class DaemonScriptedPolicy(Policy):
    def __init__(self, version: str = "base", adapter_path: str | None = None) -> None:
        self.spec = parse_model_spec("default")
        self.delay = float(os.environ.get("DAEMON_TEST_DELAY", "0"))
        self.adapters: list[tuple[str, str | None]] = []
        self.set_adapter(version, adapter_path)

    def set_adapter(self, version: str, adapter_path: str | None) -> None:
        if adapter_path is not None and not (Path(adapter_path) / "adapter_config.json").exists():
            raise FileNotFoundError(f"no adapter_config.json in {adapter_path}")
        self.version = version
        self.adapters.append((version, adapter_path))

    async def generate(self, chats: list[Chat], params: SamplingParams) -> list[Completion]:
        if self.delay:
            await asyncio.sleep(self.delay)
        out = []
        for chat in chats:
            for j in range(params.n):
                text = self._answer(node_of(chat), chat, j if params.n > 1 else 0)
                out.append(Completion(text=text, prompt_tokens=10, completion_tokens=5, model_version=self.version))
        return out

    def _answer(self, node: str, chat: Chat, sample: int) -> str:
        if node == "critique":
            return "VERDICT: CORRECT"
        if node == "reflect":
            return "I should add each term carefully."
        question = next(m["content"] for m in chat if m["role"] == "user")
        match = _Q.search(question)
        if match is None:
            return "<answer>0</answer>"
        value = eval(match.group(1), {"__builtins__": {}})  # digits and + - * only (the regex)
        solved = _h(match.group(1)) % 4 < _level(self.version) or node == "retry"
        return f"<answer>{value if solved or sample % 2 else value + 1}</answer>"


def policy(version: str = "base", adapter_path: str | None = None) -> DaemonScriptedPolicy:
    return DaemonScriptedPolicy(version, adapter_path)


COLLAPSE = {0: (1, 0), 1: (2, 1), 2: (1, 3), 3: (0, 4)}
"""Version number -> (levels solved, levels collapsed) of :class:`CollapsingPolicy` (4 levels = all tasks)."""


class CollapsingPolicy(DaemonScriptedPolicy):
    """A planted SRT collapse: each training makes the policy answer a constant on more tasks.

    A task's level is ``hash(question) % 4``. Version N solves levels below ``solved`` (every sample right,
    so the majority vote agrees), answers ``0`` on the top ``collapsed`` levels (every sample the same:
    the majority self-reward is 1.0, the verifier says wrong), and on the rest gives a different answer per
    sample (the vote splits: an unreliable label, reward 0). v1 is better than base on held-out tasks (the
    gate promotes it), later versions collapse: self-reward rises towards 1.0 while accuracy falls.
    """

    def _answer(self, node: str, chat: Chat, sample: int) -> str:
        if node in ("critique", "reflect"):
            return super()._answer(node, chat, sample)
        question = next(m["content"] for m in chat if m["role"] == "user")
        matches = list(_Q.finditer(question))  # the last one: memory hints (solved examples) come first
        if not matches:
            return "<answer>0</answer>"
        match = matches[-1]
        value = eval(match.group(1), {"__builtins__": {}})  # digits and + - * only (the regex)
        m = re.match(r"v(\d+)-", self.version)
        solved, collapsed = COLLAPSE[min(int(m.group(1)) if m else 0, 3)]
        level = _h(match.group(1)) % 4
        if level < solved:
            return f"<answer>{value}</answer>"
        if level >= 4 - collapsed:
            return "<answer>0</answer>"
        return f"<answer>{value + 1 + sample}</answer>"


def collapsing_policy(version: str = "base", adapter_path: str | None = None) -> CollapsingPolicy:
    return CollapsingPolicy(version, adapter_path)


class HashEmbedder:
    """Deterministic bag-of-words vectors: no model load (for tests only)."""

    dimension = 64

    def encode(self, texts, batch_size=None) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.split():
                out[i, _h(word) % self.dimension] += 1.0
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-6)
        return out


def fake_train(lib, method, *, steps=1, env=None, overrides=None, progress=None, resume=False, **_):
    """Registers a candidate through the real registry (adapter dir written, renamed, then registered)."""
    from trainer import registry
    from trainer.train import NotEnoughDataError

    if lib.count(first_success=False) == 0:
        raise NotEnoughDataError("no failed first attempts")
    delay = float(os.environ.get("DAEMON_TEST_TRAIN_DELAY", "0"))
    for step in range(1, steps + 1):
        time.sleep(delay)
        if progress:
            progress(step, steps, {"loss": 1.0 / step})
    parent = lib.serving_version()
    version_id = registry.next_version_id(lib, method)

    def save(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "adapter_model.safetensors").write_bytes(b"\0" * 1024)
        time.sleep(delay)
        (path / "adapter_config.json").write_text(json.dumps({"fake": True, "parent": parent.id}))

    return registry.register_candidate(lib, lib.workspace, version_id, save, parent=parent.id, method=method,
                                       metrics={"steps": steps, "train/reward_mean": 0.5})


def crashing_train(lib, method, **_):
    """A trainer with a bug: the daemon must record the crash (status ``crashed``, traceback) and die."""
    raise RuntimeError("planted trainer bug: tensor shapes do not match")

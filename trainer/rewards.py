"""Reward functions for TRL's ``reward_funcs``: plain callables, never ``nn.Module``.

TRL calls ``reward(prompts=..., completions=..., completion_ids=..., **columns)`` where ``columns``
are the dataset's extra columns as lists (here ``task``, ``env``, ``retry_template``, ``retry_slot``) plus
``trainer_state``, ``log_metric`` and ``log_extra``. A callable that is an ``nn.Module`` would be
treated as a reward *model*, hence plain classes.

- :class:`EnvironmentReward` verifies first-attempt completions with the task's environment.
- Self-reward rows (a ``feedback_source`` column other than ``"verifier"``): the hidden verifier is
  ground truth the run is not supposed to have, so both rewards score the answer against the row's
  pseudo-``label`` instead (1.0 if the extracted answer, normalised with
  :func:`environments.normalize_answer`, equals it, else 0.0; see :func:`self_reward`). A self-reward
  row without a label raises (the datasets drop such rows). Without the columns: the verifier, as before.
- :class:`RetryReward` is the R3 reward: the completion is a reflection; the retry is generated with the
  CURRENT policy (the trainer binds it, see :mod:`trainer.grpo_reflection`) and verified → 1/0, plus an
  optional small format term. Generation runs in ``eval()`` under ``torch.inference_mode()`` with
  gradient checkpointing off, ``use_cache=True`` and an explicit ``GenerationConfig`` (the saved one has
  no ``max_new_tokens``, so generate would stop at 20 tokens); train mode is restored afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from environments import normalize_answer
from environments.chat import with_system

from .datasets import environment_of, retry_prompt, task_of

GenerateFn = Callable[[list[list[dict[str, str]]]], list[str]]


def completion_text(completion: Any) -> str:
    """Text of a TRL completion: a string, or a conversational list of messages (the assistant turns).

    >>> completion_text([{"role": "assistant", "content": "hi"}])
    'hi'
    >>> completion_text("plain")
    'plain'
    """
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def verify(task_json: str, env: str, text: str) -> bool:
    return environment_of(env).verify(task_of(task_json), text).success


def self_reward(env: str, text: str, label: str) -> float:
    """Agreement of the answer in ``text`` with a pseudo-label: 1.0 or 0.0 (no answer: 0.0).

    >>> self_reward("arithmetic", "<answer>1,024.</answer>", "1024"), self_reward("arithmetic", "hm", "1")
    (1.0, 0.0)
    """
    answer = environment_of(env).extract_answer(text)
    return float(answer is not None and normalize_answer(answer) == normalize_answer(label))


def _pseudo(i: int, feedback_source: Sequence[str] | None, label: Sequence[str | None] | None) -> str | None:
    """Row ``i``'s pseudo-label when it is a self-reward row, else None (use the verifier)."""
    if feedback_source is None or feedback_source[i] in (None, "verifier"):
        return None
    found = label[i] if label is not None else None
    if found is None:
        raise ValueError(
            f"row {i} comes from {feedback_source[i]!r} self-reward feedback but has no pseudo-label; the "
            "verifier would be ground truth the run must not train on (build datasets with trainer.datasets, "
            "which drops such rows)"
        )
    return found


class EnvironmentReward:
    """Reward of the task's own verifier on a (first-attempt) completion: ``Feedback.reward`` in [-1, 1].

    >>> from environments import get_environment
    >>> t = get_environment("arithmetic").sample(1, seed=0)[0]
    >>> r = EnvironmentReward()
    >>> r(prompts=[t.messages()], completions=[f"<answer>{t.reference['value']}</answer>"],
    ...   task=[t.model_dump_json()], env=[t.env])
    [1.0]
    """

    __name__ = "env_reward"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], task: Sequence[str],
                 env: Sequence[str], log_metric: Callable[[str, float], None] | None = None,
                 feedback_source: Sequence[str] | None = None, label: Sequence[str | None] | None = None,
                 **_: Any) -> list[float]:
        rewards, successes = [], 0
        for i, (comp, tj, spec) in enumerate(zip(completions, task, env, strict=True)):
            pseudo = _pseudo(i, feedback_source, label)
            if pseudo is not None:
                r = self_reward(spec, completion_text(comp), pseudo)
                rewards.append(r)
                successes += r == 1.0
                continue
            fb = environment_of(spec).verify(task_of(tj), completion_text(comp))
            rewards.append(float(fb.reward))
            successes += fb.success
        if log_metric is not None and rewards:
            log_metric("first_try_success", successes / len(rewards))
        return rewards


_ANSWER_TAG = re.compile(r"<answer>", re.IGNORECASE)


def reflection_format_score(text: str, max_words: int = 80) -> float:
    """1.0 for a usable reflection: non-empty, at most ``max_words`` words, and no ``<answer>`` tag (a
    reflection should say what went wrong, not smuggle the answer in). 0.0 otherwise.

    >>> reflection_format_score("I mis-added the tens digit.")
    1.0
    >>> reflection_format_score("<answer>5</answer>")
    0.0
    """
    words = text.split()
    return float(0 < len(words) <= max_words and not _ANSWER_TAG.search(text))


class HFGenerate:
    """Greedy-or-sampled batched generation with a live (possibly PEFT-wrapped, training) model.

    Switches to ``eval()`` under ``torch.inference_mode()``, turns gradient checkpointing off (it forces
    ``use_cache=False``), generates with an explicit GenerationConfig, and restores both afterwards.
    """

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int = 64, do_sample: bool = False,
                 temperature: float = 1.0) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.do_sample, self.temperature = max_new_tokens, do_sample, temperature

    def __call__(self, chats: list[list[dict[str, str]]]) -> list[str]:
        import torch
        from transformers import GenerationConfig

        model, tok = self.model, self.tokenizer
        # The system-turn rule of environments.chat, as the policy layer renders served prompts.
        texts = [tok.apply_chat_template(with_system(c), tokenize=False, add_generation_prompt=True) for c in chats]
        gen_cfg = GenerationConfig(
            max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, use_cache=True,
            temperature=self.temperature if self.do_sample else None, top_p=None, top_k=None,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
        was_training = model.training
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        new_api = hasattr(base, "activation_checkpointing_enable")  # transformers >= 5 renamed gradient_*
        had_ckpt = bool(getattr(base, "is_activation_checkpointing" if new_api else "is_gradient_checkpointing", False))
        padding_side, tok.padding_side = tok.padding_side, "left"
        try:
            if had_ckpt:
                (base.activation_checkpointing_disable if new_api else base.gradient_checkpointing_disable)()
            model.eval()
            device = next(model.parameters()).device
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.inference_mode():
                out = model.generate(**enc, generation_config=gen_cfg)
            return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        finally:
            tok.padding_side = padding_side
            if had_ckpt:
                (base.activation_checkpointing_enable if new_api else base.gradient_checkpointing_enable)()
            model.train(was_training)


class RetryReward:
    """The R3 reward: 1 if the retry written with this reflection in context succeeds, else 0.

    ``reward = success + format_weight * reflection_format_score`` (``format_weight`` defaults to 0: the
    paper's reward is the bare 0/1; a small weight such as 0.1 gives a signal when every retry fails,
    which is common below 1.5B parameters). Logs ``retry_success_rate`` through TRL's ``log_metric``.

    ``generate`` is a callable chats → texts; :meth:`bind` sets it to the trainer's live policy
    (:class:`HFGenerate`). A scripted one gives exact checks:

    >>> from environments import get_environment
    >>> t = get_environment("arithmetic").sample(1, seed=0)[0]
    >>> r = RetryReward(generate=lambda chats: [f"<answer>{t.reference['value']}</answer>", "no"])
    >>> template = [*t.messages(), {"role": "user", "content": "Reflection: old. Try again."}]
    >>> r(prompts=[t.messages()] * 2, completions=["think", "think"], task=[t.model_dump_json()] * 2,
    ...   env=[t.env] * 2, retry_template=[template] * 2, retry_slot=[[len(template) - 1, 12, 15]] * 2)
    [1.0, 0.0]
    """

    __name__ = "retry_reward"

    def __init__(self, generate: GenerateFn | None = None, format_weight: float = 0.0, max_new_tokens: int = 64,
                 batch_size: int = 16) -> None:
        if format_weight < 0:
            raise ValueError("format_weight must be >= 0 (it is a bonus for well-formed reflections)")
        self.generate, self.format_weight = generate, format_weight
        self.scripted = generate is not None  # a caller-supplied generate is kept by bind()
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.last_retries: list[str] = []

    def bind(self, model: Any, tokenizer: Any, engine_sync: Any = None) -> RetryReward:
        """Generate retries with ``model`` (the live policy whose weights are being trained), unless a
        scripted ``generate`` was given at construction (tests, benchmarks). With ``engine_sync`` (a
        :class:`trainer.engine_sampling.EngineSync`) they run on the vLLM engine with those weights."""
        if self.scripted:
            return self
        if engine_sync is not None:
            from .engine_sampling import EngineGenerate

            self.generate = EngineGenerate(engine_sync, tokenizer, max_new_tokens=self.max_new_tokens)
            self.batch_size = max(self.batch_size, 256)  # the engine batches continuously: send all at once
            return self
        self.generate = HFGenerate(model, tokenizer, max_new_tokens=self.max_new_tokens)
        return self

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], task: Sequence[str], env: Sequence[str],
                 retry_template: Sequence[list[dict[str, str]]], retry_slot: Sequence[Sequence[int]],
                 log_metric: Callable[[str, float], None] | None = None,
                 log_extra: Callable[[str, list], None] | None = None, feedback_source: Sequence[str] | None = None,
                 label: Sequence[str | None] | None = None, **_: Any) -> list[float]:
        if self.generate is None:
            raise RuntimeError("RetryReward has no generate function: call .bind(model, tokenizer) or pass generate=")
        reflections = [completion_text(c) for c in completions]
        chats = [retry_prompt(t, slot, r) for t, slot, r in zip(retry_template, retry_slot, reflections, strict=True)]
        retries: list[str] = []
        for i in range(0, len(chats), self.batch_size):
            batch = chats[i:i + self.batch_size]
            out = self.generate(batch)
            if len(out) != len(batch):
                raise ValueError(f"generate returned {len(out)} texts for {len(batch)} chats")
            retries.extend(out)
        self.last_retries = retries
        pseudo = [_pseudo(i, feedback_source, label) for i in range(len(retries))]
        success = [float(verify(tj, spec, text)) if p is None else self_reward(spec, text, p)
                   for tj, spec, text, p in zip(task, env, retries, pseudo, strict=True)]
        rewards = [s + self.format_weight * reflection_format_score(r) for s, r in zip(success, reflections,
                                                                                       strict=True)]
        if log_metric is not None and success:
            log_metric("retry_success_rate", sum(success) / len(success))
        if log_extra is not None:
            log_extra("retry", retries)
        return rewards

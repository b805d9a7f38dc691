"""Arm d's memory: a real experience library of the model's own train-split attempts, searched per failure.

The library (``<out>/<env>/library``) gets one sampled first attempt at each of ``library_tasks`` train tasks,
recorded as single-attempt episodes. A failure's hints are the ``hints_k`` most similar *successes* whose
similarity clears the graph's threshold (:class:`agent.graph.EpisodeConfig` ``min_hint_score``), in the text
the graph shows (``Episode.hint_text``, kept in the index). Train and eval tasks never overlap (the split
is a hash of the question), so no hint holds a failure's own answer.
"""

from __future__ import annotations

from pathlib import Path

from agent.graph import EpisodeConfig
from agent.policy import Policy, SamplingParams
from environments import Environment
from memory import ExperienceLibrary
from memory.records import Attempt, Episode, ModelCall

from .config import StudyConfig
from .records import FirstAttempt


async def fill_library(lib: ExperienceLibrary, policy: Policy, env: Environment, cfg: StudyConfig) -> int:
    """Record one first attempt per train task (once: a filled library is left alone). Returns successes."""
    if lib.count(env=env.spec) == 0:
        tasks = env.sample(cfg.library_tasks, split="train", seed=cfg.seed)
        params = SamplingParams(max_tokens=cfg.solve_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
        outs = await policy.generate([t.messages() for t in tasks], params)
        episodes = []
        for task, c in zip(tasks, outs, strict=True):
            fb = env.verify(task, c.text)
            call = ModelCall(node="solve", messages=task.messages(), output=c.text, prompt_tokens=c.prompt_tokens,
                             completion_tokens=c.completion_tokens, model_version=policy.version)
            attempt = Attempt(index=0, solve=call, answer=fb.answer, feedback=fb)
            episodes.append(Episode(env=env.spec, task=task, model_version=policy.version, attempts=[attempt],
                                    metadata={"purpose": "reflection-study-library"}))
        lib.record_many(episodes)
    return lib.count(env=env.spec, success=True)


def hints_for(lib: ExperienceLibrary, env: Environment, failures: list[FirstAttempt], k: int) -> list[list[str]]:
    """Per failure, up to ``k`` hint texts of similar past successes (possibly none)."""
    threshold = EpisodeConfig().min_hint_score
    out = []
    for f in failures:
        task = f.task_obj
        hits = lib.search(task.question, env=env.spec, success=True, k=k * 3)
        out.append([h.hint for h in hits if h.score >= threshold and h.episode_id][:k])
    return out


def open_library(path: Path) -> ExperienceLibrary:
    return ExperienceLibrary(path, chroma_url=None)

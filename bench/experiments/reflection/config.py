"""The study's settings: which environments at which band, how many failures and samples, the token budgets.

Settings that change what a number means are in :data:`MEASUREMENT_KEYS`; ``run`` refuses to continue an
``--out`` directory made with other values of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Each env at its easiest sensible setting for the embedded 135M model, measured with the ``bands`` command
# (runs/bands*.json; numbers in docs/reflection.md): arithmetic:digits=2 is right 30% greedy / 11% at T=0.7
# and its eval split has ~1,600 distinct tasks; the other three are at 0% even there (the model never
# writes the answer format), which the study reports as it is.
DEFAULT_BANDS: tuple[str, ...] = (
    "arithmetic:digits=2",
    "countdown:min_numbers=2,max_numbers=2,max_number=20",
    "reasoning_gym:leg_counting,min_animals=1,max_animals=2",
    "function_calling:num_tools=2",
)
ARMS: tuple[str, ...] = ("a", "b", "c", "e", "d", "a_bare", "b_bare", "e_bare")
MEASUREMENT_KEYS = ("model", "failures", "k", "temperature", "top_p", "solve_tokens", "reflect_tokens", "seed",
                    "hints_k", "library_tasks")


class StudyConfig(BaseModel):
    """What one study run measures. Every field is a ``run`` option of the same name."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="default", description="Model spec (agent.policy.parse_model_spec).")
    envs: list[str] = Field(default_factory=lambda: list(DEFAULT_BANDS), min_length=1)
    arms: list[str] = Field(default_factory=lambda: list(ARMS), min_length=1)
    failures: int = Field(default=128, ge=1, description="First-try failures per env (distinct held-out tasks).")
    k: int = Field(default=4, ge=1, le=16, description="Second attempts per failure and arm (an R3 group).")
    temperature: float = Field(default=0.7, gt=0, le=2)
    top_p: float = Field(default=0.95, gt=0, le=1)
    solve_tokens: int = Field(default=128, ge=8, description="Budget of a first attempt and of every retry.")
    reflect_tokens: int = Field(default=64, ge=8)
    hints_k: int = Field(default=2, ge=1, le=5, description="Arm d: past successes shown.")
    library_tasks: int = Field(default=128, ge=8, description="Arm d: train tasks sampled once to fill the library.")
    seed: int = Field(default=7, description="Which held-out tasks (and train tasks for the library).")
    max_draws: int = Field(default=2048, ge=1, description="Give up on an env after this many first attempts.")

    @field_validator("arms")
    @classmethod
    def _known_arms(cls, v: list[str]) -> list[str]:
        unknown = [a for a in v if a not in ARMS]
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
        # e reuses a's reflections, e_bare a_bare's, d needs a and e (it uses the winning retry design)
        need = {"e": "a", "e_bare": "a_bare", "d": "e"}
        order = [a for a in ARMS if a in v or any(need.get(x) == a for x in v)]
        if "d" in order and "a" not in order:
            order.insert(0, "a")
        return sorted(set(order), key=ARMS.index)

    def measurement(self) -> dict:
        return {k: getattr(self, k) for k in MEASUREMENT_KEYS}


def check_resume(out: Path, cfg: StudyConfig) -> None:
    """Write ``settings.json`` on first use; refuse an ``out`` made with other measurement settings."""
    path = out / "settings.json"
    out.mkdir(parents=True, exist_ok=True)
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in cfg.measurement().items() if old.get(k) != v}
        if diff:
            raise SystemExit(f"{out} holds a study made with other settings {diff}: use another --out")
        return
    path.write_text(json.dumps(cfg.measurement(), indent=1))

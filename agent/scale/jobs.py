"""What travels between the driver and a Ray worker: plain dataclasses of JSON-able fields.

Tasks, configs and episodes cross as ``model_dump(mode="json")`` dicts, so a worker on another node
with the same selfevolve version rebuilds them exactly, and no pickled pydantic internals are involved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerSpec:
    """How every worker of a pool builds its policy, and what each may hold of the cluster."""

    model: str  # a model spec: default | hf:<dir> | openai:<url>#<model> | vllm:<dir> | python:<module>:<factory>
    version: str = "base"  # the registry version served (its id is recorded on every episode)
    adapter_path: str | None = None  # the version's LoRA adapter; must exist at this path on the worker's node
    options: dict[str, Any] = field(default_factory=dict)  # backend options (load_policy's **opts)
    concurrency: int = 1  # episodes one worker runs at a time (its policy batches their calls)
    num_cpus: float = 1.0  # Ray resources each worker reserves (Ray sets OMP_NUM_THREADS to the CPUs)
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"worker concurrency must be >= 1, got {self.concurrency}")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError(f"worker resources must be >= 0, got num_cpus={self.num_cpus}, num_gpus={self.num_gpus}")


@dataclass
class EpisodeJob:
    """One episode to run: the task, how to run it, and the id it will be recorded under."""

    episode_id: str  # chosen by the driver once per task; every retry reuses it
    env: str  # canonical environment spec; the worker builds the environment from it
    task: dict[str, Any]
    config: dict[str, Any]  # EpisodeConfig fields
    feedback: str = "verifier"  # a feedback-source spec, built on the worker (it may call the policy)
    run_id: str | None = None
    seed: int | None = None
    purpose: str = "train"
    metadata: dict[str, Any] = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)  # chosen by the driver from its library
    retrieved_ids: list[str] = field(default_factory=list)


@dataclass
class EpisodeResult:
    """A worker's answer: the finished episode (JSON) or why it failed in a live worker."""

    episode_id: str
    episode: dict[str, Any] | None = None
    error: str | None = None
    worker: str = ""  # the actor's name, for logs


@dataclass
class PoolStats:
    """What the fault handling did, over the pool's life (the run summary stays the in-process one)."""

    restarts: int = 0  # workers replaced after they died
    resubmitted: int = 0  # tasks sent again after their worker died
    duplicates: int = 0  # results for an episode id already recorded, ignored
    exhausted: int = 0  # tasks reported as errors after max_retries resubmissions

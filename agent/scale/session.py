"""A connected cluster plus a started pool, for the CLI, the daemon and the benchmark.

    with RaySession(RayOptions(address="local", workers=2), "default", concurrency=16) as ray_run:
        episodes, summary = asyncio.run(ray_run.collect(plan, config, library=lib, run_id=run.id))

``concurrency`` is the total number of episodes in flight, as ``--concurrency`` means in-process: each
worker runs ``ceil(concurrency / workers)`` at a time and its policy batches their calls. :meth:`serve`
switches the served model version (the daemon after a promotion) by starting a new pool.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import ExitStack
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.scale.cluster import connected, default_workers, parse_address
from agent.scale.driver import DEFAULT_MAX_RETRIES, collect_on_ray
from agent.scale.jobs import PoolStats, WorkerSpec
from agent.scale.pool import WorkerPool


class RayOptions(BaseModel):
    """Where and how wide to collect on Ray (``--ray``/``--ray-workers``/``--ray-retries``; daemon keys)."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(description="local | auto | HOST:PORT | ray://HOST:10001")
    workers: int | None = Field(default=None, ge=1, description="Ray workers (default: 2 local, else the cluster's CPUs).")
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, le=100,
                             description="Resubmissions of a task whose worker died, before it is reported as an error.")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return parse_address(v)


class RaySession:
    """See the module docstring; ``open``/``close`` or a ``with`` block."""

    def __init__(self, options: RayOptions, model: str, *, version: str = "base", adapter_path: str | None = None,
                 concurrency: int | None = None, policy_options: dict[str, Any] | None = None) -> None:
        self.options, self.concurrency = options, concurrency
        self._spec = WorkerSpec(model, version=version, adapter_path=adapter_path, options=dict(policy_options or {}))
        self._stack = ExitStack()
        self.pool: WorkerPool | None = None
        self.workers = 0

    def open(self) -> RaySession:
        """Connect (or start the local cluster), then start the workers and wait until they loaded the model."""
        try:
            self._stack.enter_context(connected(self.options.address, self.options.workers))
            self.workers = self.options.workers or default_workers(self.options.address)
            per = math.ceil(self.concurrency / self.workers) if self.concurrency else 1
            self._spec = dataclasses.replace(self._spec, concurrency=per)
            self.pool = WorkerPool(self._spec, self.workers).start()
        except BaseException:
            self._stack.close()
            raise
        return self

    @property
    def stats(self) -> PoolStats:
        return self.pool.stats if self.pool is not None else PoolStats()

    def serve(self, version: str, adapter_path: str | None) -> None:
        """Serve another model version: a new pool of workers with it (no-op if it is already served)."""
        spec = dataclasses.replace(self._spec, version=version, adapter_path=adapter_path)
        if self.pool is not None and spec == self.pool.spec:
            return
        stats = self.stats
        if self.pool is not None:
            self.pool.close()
        self._spec = spec
        self.pool = WorkerPool(spec, self.workers).start()
        self.pool.stats = stats  # counts over the session, across versions

    async def collect(self, plan: Any, config: Any, **kwargs: Any):
        """:func:`agent.scale.driver.collect_on_ray` on this session's pool and retry bound."""
        if self.pool is None:
            raise RuntimeError("RaySession.collect before open()")
        return await collect_on_ray(self.pool, plan, config, max_retries=self.options.max_retries, **kwargs)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        self._stack.close()

    def __enter__(self) -> RaySession:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

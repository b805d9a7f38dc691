"""Where the Ray workers run: parse ``--ray`` / ``ray =``, connect to (or start) the cluster, size the pool.

    --ray local                 start a single-node cluster inside this process (127.0.0.1, no dashboard)
    --ray auto                  join the cluster `ray start --head` started on this machine
    --ray HOST:PORT             join a cluster by its GCS address (e.g. 10.0.0.5:6379)
    --ray ray://HOST:10001      connect through Ray Client

Typer has no optional-value options, so ``--ray`` always takes a value; ``local`` is the "bare" form.
If this process is already connected (a test, a notebook), that connection is used and left open.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'selfevolve[scale]'"
DEFAULT_LOCAL_WORKERS = 2
_HOST_PORT = re.compile(r"[A-Za-z0-9_.\-]+:\d{1,5}")


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or the cluster cannot take the workers; the message names the fix."""


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def require_ray() -> Any:
    """The ``ray`` module, or :class:`RayUnavailableError` naming the install command."""
    if not ray_installed():
        raise RayUnavailableError(f"collection on Ray needs Ray, which is not installed: {INSTALL_HINT}")
    import ray

    return ray


def parse_address(value: str) -> str:
    """``local``, ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; ValueError naming the accepted forms.

    >>> parse_address(" ray://head:10001 ")
    'ray://head:10001'
    >>> parse_address("head")
    Traceback (most recent call last):
    ...
    ValueError: bad Ray address 'head': use local (a cluster in this process), auto (the local `ray start` cluster), HOST:PORT or ray://HOST:10001
    """
    address = (value or "").strip()
    if address in ("local", "auto") or _HOST_PORT.fullmatch(address):
        return address
    if address.startswith("ray://") and _HOST_PORT.fullmatch(address.removeprefix("ray://")):
        return address
    raise ValueError(f"bad Ray address {value!r}: use local (a cluster in this process), auto (the local "
                     "`ray start` cluster), HOST:PORT or ray://HOST:10001")


def default_workers(address: str) -> int:
    """Workers when none are asked for: 2 on a cluster started here, one per CPU of a joined cluster."""
    if address == "local":
        return DEFAULT_LOCAL_WORKERS
    ray = require_ray()
    return max(1, int(ray.cluster_resources().get("CPU", DEFAULT_LOCAL_WORKERS)))


def check_capacity(workers: int, num_cpus: float, num_gpus: float) -> None:
    """Refuse a pool the connected cluster can never place (its actors would wait forever)."""
    ray = require_ray()
    total, free = ray.cluster_resources(), ray.available_resources()
    for name, per in (("CPU", num_cpus), ("GPU", num_gpus)):
        have = float(total.get(name, 0.0))
        if per and workers * per > have:
            fit = int(have // per)
            raise RayUnavailableError(
                f"{workers} Ray workers need {workers * per:g} {name}s but the cluster has {have:g}: "
                f"pass --ray-workers {max(fit, 1) if fit else 'N'} (ray_workers in the daemon config) or add nodes")
        if per and workers * per > float(free.get(name, 0.0)):
            log.warning("%d Ray workers need %g %ss and %g are free now: they start when other jobs release them",
                        workers, workers * per, name, float(free.get(name, 0.0)))


def _start_local(num_cpus: int) -> None:
    ray = require_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves this machine
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=True, logging_level=logging.WARNING)


@contextmanager
def connected(address: str, workers: int | None = None) -> Iterator[bool]:
    """Connect for the ``with`` block (yields whether this call started the connection) and disconnect
    after it; a connection that was already open is used as is and left open."""
    ray = require_ray()
    address = parse_address(address)
    if ray.is_initialized():
        log.info("Ray is already connected; using that cluster")
        yield False
        return
    if address == "local":
        _start_local(max(workers or DEFAULT_LOCAL_WORKERS, os.cpu_count() or 1))
    else:
        try:
            ray.init(address=address, configure_logging=True, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RayUnavailableError(f"cannot connect to the Ray cluster at {address} ({e}); start one with "
                                      "`ray start --head` or use --ray local") from None
    try:
        yield True
    finally:
        ray.shutdown()

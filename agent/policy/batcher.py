"""Merge the generate requests of concurrent callers into batched forward passes.

Why: the agent runs many episodes concurrently, and each asks the policy for one or a few
completions at a time. On CPU (and GPU) one padded batch of 16 prompts costs far less than 16
single-prompt generates, so requests that arrive close together are merged.

How: callers ``await batcher.submit(items, key)``. Requests are grouped by ``key`` (for a policy:
the SamplingParams, plus the model version) because only requests that sample the same way can share
one ``generate`` call. A worker takes the oldest group once its first request has waited ``window_ms``
(or at once when the group fills ``max_batch_size`` items), calls ``run_batch(items, key)`` and hands
each caller its own slice of the results, in order. While a batch runs, new requests keep queueing,
so under load the next batch is ready the moment the previous one ends (no window wait).

``run_batch`` returns ``results_per_item(key)`` results per item (``params.n`` for a policy), item by
item. If it raises, every caller in that batch gets the exception; nothing is swallowed.

    batcher = MicroBatcher(run_batch, window_ms=10, max_batch_size=32)
    results = await batcher.submit(chats, params)
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")  # an item (a chat)
R = TypeVar("R")  # a result (a Completion)
K = TypeVar("K", bound=Hashable)  # the group key (SamplingParams, or (version, params))


class BatcherClosedError(RuntimeError):
    """The batcher was closed while a request was waiting."""


def _default_per_item(key: Any) -> int:
    return int(getattr(key, "n", 1))


@dataclass
class _Piece(Generic[T, R]):
    """A contiguous slice of one caller's items, answered through one future."""

    items: list[T]
    future: asyncio.Future[list[R]]
    arrived: float


@dataclass
class BatcherStats:
    batches: int = 0
    items: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.batch_sizes.append(size)
        del self.batch_sizes[:-1000]  # keep the recent history only


class MicroBatcher(Generic[T, K, R]):
    """Groups concurrent requests by key into batches of at most ``max_batch_size`` items.

    ``run_batch`` may be a coroutine function or a plain function (then it runs in the default
    thread pool, so the event loop stays responsive). ``concurrency`` batches run at once (1 for a
    single CPU model: a second concurrent forward would only fight the first for cores).
    """

    def __init__(
        self,
        run_batch: Callable[[list[T], K], Any],
        *,
        window_ms: float = 5.0,
        max_batch_size: int = 32,
        concurrency: int = 1,
        results_per_item: Callable[[K], int] = _default_per_item,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._run_batch = run_batch
        self._is_async = inspect.iscoroutinefunction(run_batch) or inspect.iscoroutinefunction(
            getattr(run_batch, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        self.window_s = window_ms / 1000.0
        self.max_batch_size = max_batch_size
        self.concurrency = concurrency
        self._per_item = results_per_item
        self.stats = BatcherStats()
        self._pending: dict[K, list[_Piece[T, R]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False

    # -- public -------------------------------------------------------------------------------
    async def submit(self, items: Sequence[T], key: K) -> list[R]:
        """Queue ``items`` under ``key`` and return their results (``results_per_item(key)`` each)."""
        if self._closed:
            raise BatcherClosedError("the batcher is closed; create a new policy")
        if not items:
            return []
        self._ensure_started()
        assert self._loop is not None and self._wakeup is not None  # set by _ensure_started
        now = time.monotonic()
        futures: list[asyncio.Future[list[R]]] = []
        group = self._pending.setdefault(key, [])
        for start in range(0, len(items), self.max_batch_size):
            future: asyncio.Future[list[R]] = self._loop.create_future()
            group.append(_Piece(list(items[start : start + self.max_batch_size]), future, now))
            futures.append(future)
        self._wakeup.set()
        # Wait for every piece before raising, so no exception is left unretrieved.
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        results: list[R] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            results.extend(outcome)
        return results

    async def aclose(self) -> None:
        """Stop the workers; requests still waiting fail with :class:`BatcherClosedError`."""
        self._closed = True
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            if task.get_loop() is asyncio.get_running_loop():
                await asyncio.gather(task, return_exceptions=True)
        self._workers.clear()
        self._fail_pending(BatcherClosedError("the batcher was closed before this request ran"))

    # -- internals ----------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._workers and not all(t.done() for t in self._workers):
            return
        if self._loop is not None and self._loop is not loop:
            # A new event loop (e.g. a second asyncio.run): the old workers and futures are dead.
            self._fail_pending(BatcherClosedError("the event loop that queued this request has ended"))
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._workers = [loop.create_task(self._worker(), name=f"micro-batcher-{i}") for i in range(self.concurrency)]

    def _fail_pending(self, error: BaseException) -> None:
        for group in self._pending.values():
            for piece in group:
                if not piece.future.done() and not piece.future.get_loop().is_closed():
                    piece.future.set_exception(error)
        self._pending.clear()

    def _next_ready(self) -> tuple[K | None, float]:
        """The key of the group to run now, or (None, seconds until the oldest group is due)."""
        oldest_key: K | None = None
        oldest = float("inf")
        for key, group in self._pending.items():
            if sum(len(p.items) for p in group) >= self.max_batch_size:
                return key, 0.0
            if group[0].arrived < oldest:
                oldest_key, oldest = key, group[0].arrived
        if oldest_key is None:
            return None, float("inf")
        wait = oldest + self.window_s - time.monotonic()
        return (oldest_key, 0.0) if wait <= 0 else (None, wait)

    def _take(self, key: K) -> list[_Piece[T, R]]:
        """Pop up to max_batch_size items' worth of pieces (whole pieces, oldest first)."""
        group = self._pending[key]
        batch: list[_Piece[T, R]] = []
        size = 0
        while group and size + len(group[0].items) <= self.max_batch_size:
            piece = group.pop(0)
            if piece.future.cancelled():  # its caller went away; do not spend compute on it
                continue
            batch.append(piece)
            size += len(piece.items)
        if not group:
            del self._pending[key]
        return batch

    async def _worker(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            key, wait = self._next_ready()
            if key is None:
                wakeup.clear()
                if wait == float("inf"):
                    await wakeup.wait()
                else:
                    try:
                        await asyncio.wait_for(wakeup.wait(), timeout=wait)
                    except TimeoutError:
                        pass  # the oldest group is due now
                continue
            batch = self._take(key)
            if batch:
                await self._run(batch, key)

    async def _run(self, batch: list[_Piece[T, R]], key: K) -> None:
        items = [item for piece in batch for item in piece.items]
        self.stats.record(len(items))
        try:
            if self._is_async:
                results = await self._run_batch(items, key)
            else:
                results = await asyncio.to_thread(self._run_batch, items, key)
            per_item = self._per_item(key)
            if len(results) != len(items) * per_item:
                raise RuntimeError(
                    f"run_batch returned {len(results)} results for {len(items)} items x {per_item}; "
                    "this is a bug in the backend"
                )
        except asyncio.CancelledError:
            for piece in batch:
                if not piece.future.done():
                    piece.future.set_exception(BatcherClosedError("the batcher was closed during this batch"))
            raise
        except Exception as error:  # noqa: BLE001 - handed to every caller of the batch, not swallowed
            for piece in batch:
                if not piece.future.done():
                    piece.future.set_exception(error)
            return
        offset = 0
        for piece in batch:
            n = len(piece.items) * per_item
            if not piece.future.done():
                piece.future.set_result(list(results[offset : offset + n]))
            offset += n

"""The micro-batcher with a fake ``run_batch`` that echoes its items: merging, routing, limits, errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.policy import BatcherClosedError, MicroBatcher, SamplingParams


class Echo:
    """Records every batch and returns ``f"{item}#{j}"`` for j in range(params.n)."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[list[str], SamplingParams]] = []
        self.delay = delay
        self.fail_on = fail_on

    async def __call__(self, items: list[str], params: SamplingParams) -> list[str]:
        self.calls.append((list(items), params))
        await asyncio.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"boom on {self.fail_on}")
        return [f"{item}#{j}" for item in items for j in range(params.n)]


async def test_concurrent_callers_are_merged_and_routed_in_order() -> None:
    echo = Echo()
    batcher = MicroBatcher(echo, window_ms=20, max_batch_size=32)
    params = SamplingParams()
    requests = [[f"c{i}-a", f"c{i}-b"] if i % 2 else [f"c{i}"] for i in range(10)]
    results = await asyncio.gather(*(batcher.submit(r, params) for r in requests))
    assert results == [[f"{item}#0" for item in r] for r in requests]
    assert len(echo.calls) == 1  # all ten callers in one batch
    assert echo.calls[0][0] == [item for r in requests for item in r]
    await batcher.aclose()


async def test_n_results_per_item_are_sliced_per_caller() -> None:
    echo = Echo()
    batcher = MicroBatcher(echo, window_ms=10)
    params = SamplingParams(n=3, temperature=1.0)
    a, b = await asyncio.gather(batcher.submit(["a"], params), batcher.submit(["b1", "b2"], params))
    assert a == ["a#0", "a#1", "a#2"]
    assert b == ["b1#0", "b1#1", "b1#2", "b2#0", "b2#1", "b2#2"]
    assert len(echo.calls) == 1
    await batcher.aclose()


async def test_only_identical_params_share_a_batch() -> None:
    echo = Echo()
    batcher = MicroBatcher(echo, window_ms=10)
    greedy, hot = SamplingParams(max_tokens=8), SamplingParams(max_tokens=8, temperature=0.7)
    results = await asyncio.gather(
        batcher.submit(["x"], greedy), batcher.submit(["y"], hot), batcher.submit(["z"], greedy)
    )
    assert results == [["x#0"], ["y#0"], ["z#0"]]
    batches = {params: items for items, params in echo.calls}
    assert batches == {greedy: ["x", "z"], hot: ["y"]}
    await batcher.aclose()


async def test_batch_size_is_bounded_and_big_requests_are_split() -> None:
    echo = Echo()
    batcher = MicroBatcher(echo, window_ms=10, max_batch_size=4)
    params = SamplingParams()
    small = [batcher.submit([f"s{i}"], params) for i in range(6)]
    big = batcher.submit([f"b{i}" for i in range(10)], params)
    *small_results, big_result = await asyncio.gather(*small, big)
    assert small_results == [[f"s{i}#0"] for i in range(6)]
    assert big_result == [f"b{i}#0" for i in range(10)]
    assert all(len(items) <= 4 for items, _ in echo.calls)
    assert sum(len(items) for items, _ in echo.calls) == 16
    await batcher.aclose()


async def test_requests_queue_while_a_batch_runs() -> None:
    """Under load the next batch starts as soon as the previous ends, with everything that queued."""
    echo = Echo(delay=0.05)
    batcher = MicroBatcher(echo, window_ms=1)
    params = SamplingParams()
    first = asyncio.ensure_future(batcher.submit(["first"], params))
    await asyncio.sleep(0.01)  # the first batch is running now
    rest = await asyncio.gather(*(batcher.submit([f"r{i}"], params) for i in range(5)))
    assert await first == ["first#0"]
    assert rest == [[f"r{i}#0"] for i in range(5)]
    assert [items for items, _ in echo.calls] == [["first"], [f"r{i}" for i in range(5)]]
    await batcher.aclose()


async def test_an_error_reaches_every_caller_of_the_batch_and_no_other() -> None:
    echo = Echo(fail_on="bad")
    batcher = MicroBatcher(echo, window_ms=10)
    params, other = SamplingParams(), SamplingParams(max_tokens=5)
    results = await asyncio.gather(
        batcher.submit(["ok"], params),
        batcher.submit(["bad"], params),
        batcher.submit(["fine"], other),
        return_exceptions=True,
    )
    assert isinstance(results[0], RuntimeError) and "boom on bad" in str(results[0])
    assert isinstance(results[1], RuntimeError)
    assert results[2] == ["fine#0"]
    # the batcher keeps serving after a failed batch
    assert await batcher.submit(["again"], params) == ["again#0"]
    await batcher.aclose()


async def test_wrong_result_count_is_an_error_not_a_misroute() -> None:
    async def short(items: list[str], params: SamplingParams) -> list[str]:
        return items[:-1]

    batcher = MicroBatcher(short, window_ms=1)
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        await asyncio.gather(batcher.submit(["a"], SamplingParams()), batcher.submit(["b"], SamplingParams()))
    await batcher.aclose()


async def test_sync_run_batch_runs_off_the_event_loop() -> None:
    def slow_echo(items: list[str], params: SamplingParams) -> list[str]:
        time.sleep(0.1)
        return [i.upper() for i in items]

    batcher = MicroBatcher(slow_echo, window_ms=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    assert await batcher.submit(["a", "b"], SamplingParams()) == ["A", "B"]
    task.cancel()
    assert ticks >= 5  # the loop kept running while the batch blocked a worker thread
    await batcher.aclose()


async def test_a_cancelled_caller_does_not_break_the_others() -> None:
    echo = Echo(delay=0.02)
    batcher = MicroBatcher(echo, window_ms=20)
    params = SamplingParams()
    doomed = asyncio.ensure_future(batcher.submit(["doomed"], params))
    kept = asyncio.ensure_future(batcher.submit(["kept"], params))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await kept == ["kept#0"]
    assert echo.calls[0][0] == ["kept"]  # the cancelled request was not computed
    await batcher.aclose()


async def test_close_fails_waiting_requests_and_refuses_new_ones() -> None:
    batcher = MicroBatcher(Echo(), window_ms=10_000)
    waiting = asyncio.ensure_future(batcher.submit(["x"], SamplingParams()))
    await asyncio.sleep(0.01)
    await batcher.aclose()
    with pytest.raises(BatcherClosedError):
        await waiting
    with pytest.raises(BatcherClosedError):
        await batcher.submit(["y"], SamplingParams())


def test_works_across_event_loops() -> None:
    batcher = MicroBatcher(Echo(), window_ms=1)
    assert asyncio.run(batcher.submit(["a"], SamplingParams())) == ["a#0"]
    assert asyncio.run(batcher.submit(["b"], SamplingParams())) == ["b#0"]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(Echo(), max_batch_size=0)
    with pytest.raises(ValueError, match="window_ms"):
        MicroBatcher(Echo(), window_ms=-1)

"""The micro-batcher: a lone call runs at once, concurrent calls share passes, order holds."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from classifiers.batcher import MicroBatcher, Overloaded


class SlowModel:
    """Upper-cases texts; each pass takes ``delay`` seconds and is recorded."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.passes: list[list[str]] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, texts: list[str]) -> list[str]:
        self.release.wait(5)
        self.threads.add(threading.current_thread().name)
        self.passes.append(list(texts))
        time.sleep(self.delay)
        return [t.upper() for t in texts]


async def test_lone_call_dispatches_at_once_in_own_thread() -> None:
    model = SlowModel()
    batcher = MicroBatcher(model, name="m")
    start = time.perf_counter()
    assert await batcher.run(["a", "b"]) == ["A", "B"]
    assert time.perf_counter() - start < 0.5
    assert model.passes == [["a", "b"]]
    assert model.threads == {"modgate-m_0"}
    await batcher.aclose()


async def test_calls_arriving_during_a_pass_share_the_next_pass() -> None:
    model = SlowModel(delay=0.05)
    batcher = MicroBatcher(model, max_batch=64)
    first = asyncio.create_task(batcher.run(["first"]))
    await asyncio.sleep(0.01)  # the first pass is running now
    rest = await asyncio.gather(*(batcher.run([f"t{i}", f"u{i}"]) for i in range(10)))
    assert await first == ["FIRST"]
    assert rest == [[f"T{i}", f"U{i}"] for i in range(10)]
    assert [len(p) for p in model.passes] == [1, 20]
    await batcher.aclose()


async def test_max_batch_splits_waiting_jobs_without_splitting_a_job() -> None:
    model = SlowModel()
    model.release.clear()
    batcher = MicroBatcher(model, max_batch=4)
    blocker = asyncio.create_task(batcher.run(["x"]))
    await asyncio.sleep(0.01)
    jobs = [asyncio.create_task(batcher.run([f"{i}a", f"{i}b", f"{i}c"])) for i in range(3)]
    await asyncio.sleep(0.01)
    model.release.set()
    results = await asyncio.gather(blocker, *jobs)
    assert results[1:] == [[f"{i}A", f"{i}B", f"{i}C"] for i in range(3)]
    assert [len(p) for p in model.passes] == [1, 3, 3, 3]
    await batcher.aclose()


async def test_max_wait_gathers_company_when_idle() -> None:
    model = SlowModel()
    batcher = MicroBatcher(model, max_batch=8, max_wait_ms=30)
    results = await asyncio.gather(*(batcher.run([str(i)]) for i in range(5)))
    assert results == [[str(i)] for i in range(5)]
    assert [len(p) for p in model.passes] == [5]
    await batcher.aclose()


async def test_full_queue_refuses_at_once() -> None:
    model = SlowModel()
    model.release.clear()
    batcher = MicroBatcher(model, max_queue=3)
    running = asyncio.create_task(batcher.run(["dispatched"]))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(batcher.run(["a", "b"]))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await batcher.run(["c", "d"])
    model.release.set()
    assert await waiting == ["A", "B"]
    assert await running == ["DISPATCHED"]
    await batcher.aclose()


async def test_a_caller_that_gives_up_leaves_the_queue() -> None:
    model = SlowModel()
    model.release.clear()
    batcher = MicroBatcher(model, max_queue=4)
    running = asyncio.create_task(batcher.run(["busy"]))
    await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await batcher.run(["gone", "away"])
    assert batcher.queued == 0
    model.release.set()
    assert await running == ["BUSY"]
    assert await batcher.run(["next"]) == ["NEXT"]
    assert ["gone", "away"] not in model.passes
    await batcher.aclose()


async def test_a_failing_pass_fails_its_callers_only() -> None:
    calls = 0

    def flaky(texts: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model exploded")
        return texts

    batcher = MicroBatcher(flaky)
    with pytest.raises(RuntimeError, match="exploded"):
        await batcher.run(["a"])
    assert await batcher.run(["b"]) == ["b"]
    await batcher.aclose()


async def test_wrong_result_count_is_an_error() -> None:
    batcher = MicroBatcher(lambda texts: texts[:-1])
    with pytest.raises(RuntimeError, match="1 results for 2 texts"):
        await batcher.run(["a", "b"])
    await batcher.aclose()


async def test_empty_call_and_bad_limits() -> None:
    batcher = MicroBatcher(SlowModel())
    assert await batcher.run([]) == []
    await batcher.aclose()
    with pytest.raises(ValueError):
        MicroBatcher(SlowModel(), max_batch=0)


def test_batcher_survives_a_new_event_loop() -> None:
    batcher = MicroBatcher(SlowModel())
    assert asyncio.run(batcher.run(["one"])) == ["ONE"]
    assert asyncio.run(batcher.run(["two"])) == ["TWO"]

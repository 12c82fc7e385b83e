"""A micro-batcher: many concurrent callers, one model, one forward pass at a time.

Callers on the event loop ``await batcher.run(texts)``. Texts queue up; one dedicated thread
runs ``predict`` on as many as are waiting (up to ``max_batch``). The model is never idle while
work waits, and a lone caller never waits for company: when the worker is free a request is
dispatched at once (or after ``max_wait_ms``, for operators who trade latency for bigger
batches on a GPU). While a forward pass runs, new arrivals gather into the next batch, so the
batch size adapts to the load and the extra wait is bounded by one pass.

The queue is bounded: past ``max_queue`` waiting texts a caller gets :class:`Overloaded` at
once instead of a growing delay, and the screener's ``on_error`` decides. A caller that gives
up (a timeout, a client that went away) takes its texts out of the queue if they have not
been dispatched yet; a pass already running finishes and its result for them is dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["MicroBatcher", "Overloaded"]

T = TypeVar("T")


class Overloaded(RuntimeError):
    """More texts are waiting than the batcher's queue holds."""


@dataclass(eq=False)
class _Job(Generic[T]):
    texts: Sequence[str]
    future: asyncio.Future[list[T]]


class MicroBatcher(Generic[T]):
    """Gathers concurrent calls into batches for ``predict`` (blocking, run in its own thread)."""

    def __init__(
        self,
        predict: Callable[[list[str]], list[T]],
        *,
        name: str = "model",
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 1024,
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self._predict = predict
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_queue = max_queue
        self._jobs: deque[_Job[T]] = deque()
        self._queued = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"modgate-{name}")
        #: Sizes of the batches dispatched so far, for metrics and tests (last 1024).
        self.batch_sizes: deque[int] = deque(maxlen=1024)

    @property
    def queued(self) -> int:
        return self._queued

    async def run(self, texts: Sequence[str]) -> list[T]:
        """``predict`` over ``texts``, batched with whatever else is waiting."""
        if not texts:
            return []
        if self._queued + len(texts) > self._max_queue:
            raise Overloaded(f"{self._queued} texts already waiting (max_queue {self._max_queue})")
        loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(texts, loop.create_future())
        self._jobs.append(job)
        self._queued += len(texts)
        self._ensure_dispatcher()
        assert self._wake is not None
        self._wake.set()
        try:
            return await job.future
        finally:
            if job in self._jobs:  # given up before dispatch (cancelling also cancels the future)
                self._jobs.remove(job)
                self._queued -= len(job.texts)

    def _ensure_dispatcher(self) -> None:
        loop = asyncio.get_running_loop()
        # A batcher outlives event loops in tests and CLI runs: the dispatcher belongs to one.
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._dispatch(), name="micro-batcher")

    async def _dispatch(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._max_wait_s and 0 < self._queued < self._max_batch:
                await asyncio.sleep(self._max_wait_s)
            while self._jobs:
                batch = self._take()
                texts = [t for job in batch for t in job.texts]
                self.batch_sizes.append(len(texts))
                try:
                    results = await loop.run_in_executor(self._pool, self._predict, texts)
                    if len(results) != len(texts):
                        raise RuntimeError(f"predict returned {len(results)} results for {len(texts)} texts")
                except Exception as exc:  # every waiting caller gets the failure; on_error decides
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                at = 0
                for job in batch:
                    if not job.future.done():
                        job.future.set_result(list(results[at : at + len(job.texts)]))
                    at += len(job.texts)

    def _take(self) -> list[_Job[T]]:
        """Whole jobs from the front of the queue, up to ``max_batch`` texts (at least one job,
        so a caller with more texts than ``max_batch`` still runs, as one oversized pass)."""
        batch: list[_Job[T]] = []
        size = 0
        while self._jobs and (not batch or size + len(self._jobs[0].texts) <= self._max_batch):
            job = self._jobs.popleft()
            self._queued -= len(job.texts)
            if job.future.done():  # its caller gave up between queueing and now
                continue
            batch.append(job)
            size += len(job.texts)
        return batch

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(RuntimeError("micro-batcher closed"))
        self._jobs.clear()
        self._queued = 0
        self._pool.shutdown(wait=False, cancel_futures=True)

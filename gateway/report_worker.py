"""The report worker: claim events from the outbox, deliver each to every sink, acknowledge.

An event that any sink refuses is failed back to the store, which retries it after a backoff
and dead-letters it after the configured attempts; one that a crashed worker held is retaken
by another after ``reclaim_after_s``. So every event reaches every sink at least once, and a
sink that took it already sees it again on a retry (same ``event_id``, its idempotency key).

The worker runs as one asyncio task with an explicit stop (:meth:`ReportWorker.stop`, or
``async with running(worker)``), inside ``serve`` or alone (``modgate reports worker``).
Several workers, in one process or many, share the outbox; each needs its own consumer name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.records import Delivery
from gateway.sinks import Sink, SinkError
from gateway.store.base import ReportStore

__all__ = ["ReportWorker", "WorkerStats", "consumer_name", "event_body", "running"]

log = logging.getLogger("modgate.reports")

MAX_STORE_BACKOFF_S = 30.0


def consumer_name() -> str:
    """Unique per process: ``hostname-pid``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def event_body(delivery: Delivery) -> dict[str, Any]:
    """What the sinks receive for one outbox event."""
    sent_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "event_id": delivery.event_id,
        "type": delivery.kind,
        "report": delivery.report.to_dict(),
        "sent_at": sent_at,
    }


@dataclass
class WorkerStats:
    """Running totals, for metrics: attempts and failures per sink; events acknowledged
    (delivered, or taken with no sink configured) and dead-lettered."""

    attempts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    acked: int = 0
    dead: int = 0


class ReportWorker:
    """Delivers outbox events to ``sinks``; with no sink, acknowledges them undelivered.

    ``on_attempt(sink_name, ok)`` is called after each delivery attempt to a sink, and
    ``on_dead(delivery)`` when an event is dead-lettered (e.g. to count them in Prometheus).
    """

    def __init__(
        self,
        reports: ReportStore,
        sinks: Sequence[Sink],
        *,
        consumer: str | None = None,
        batch: int = 16,
        block_ms: int = 1000,
        on_attempt: Callable[[str, bool], None] | None = None,
        on_dead: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.reports = reports
        self.sinks = list(sinks)
        self.consumer = consumer or consumer_name()
        self.batch = batch
        self.block_ms = block_ms
        self.on_attempt = on_attempt
        self.on_dead = on_dead
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, block_ms: int = 0) -> int:
        """Claim one batch and handle it; the number of events handled."""
        deliveries = await self.reports.claim(self.consumer, self.batch, block_ms)
        for delivery in deliveries:
            await self.handle(delivery)
        return len(deliveries)

    async def handle(self, delivery: Delivery) -> None:
        if not self.sinks:
            await self.reports.ack(delivery)
            self.stats.acked += 1
            return
        event = event_body(delivery)
        errors = await asyncio.gather(*(self._deliver(sink, event) for sink in self.sinks))
        failed = [error for error in errors if error]
        if not failed:
            await self.reports.ack(delivery)
            self.stats.acked += 1
            log.info(
                "report event delivered event_id=%s report_id=%s type=%s attempts=%d",
                delivery.event_id, delivery.report.id, delivery.kind, delivery.attempts + 1,
            )  # fmt: skip
            return
        error = "; ".join(failed)
        dead = await self.reports.fail(delivery, error)
        log.warning(
            "report event %s event_id=%s report_id=%s type=%s attempts=%d error=%s",
            "dead-lettered" if dead else "failed, will retry",
            delivery.event_id, delivery.report.id, delivery.kind, delivery.attempts + 1, error,
        )  # fmt: skip
        if dead:
            self.stats.dead += 1
            if self.on_dead is not None:
                self.on_dead(delivery)

    async def _deliver(self, sink: Sink, event: dict[str, Any]) -> str:
        """Deliver to one sink; the error ('' on success)."""
        error = ""
        try:
            await sink.deliver(event)
        except SinkError as exc:  # our own messages: the sink and why, no content
            error = str(exc)
        except Exception as exc:  # anything else may quote content: its type only
            error = f"{sink.name}: {type(exc).__name__}"
        self.stats.attempts[sink.name] += 1
        if error:
            self.stats.failures[sink.name] += 1
        if self.on_attempt is not None:
            self.on_attempt(sink.name, not error)
        return error

    async def run(self) -> None:
        """Loop until :meth:`stop`; a store that fails is retried with a growing pause."""
        pause = 0.5
        while not self._stopping.is_set():
            try:
                await self.run_once(self.block_ms)
                pause = 0.5
            except Exception as exc:
                log.warning(
                    "report worker: store error consumer=%s error=%s; again in %.1fs",
                    self.consumer, type(exc).__name__, pause,
                )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                pause = min(pause * 2, MAX_STORE_BACKOFF_S)

    def start(self) -> asyncio.Task[None]:
        """Run in a task of the current loop; :meth:`stop` must follow (see :func:`running`)."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name=f"report-worker {self.consumer}")
        return self._task

    async def stop(self, grace_s: float = 5.0) -> None:
        """Let the batch in hand finish for up to ``grace_s``, then cancel. Events cut off are
        not lost: they stay claimed and another worker retakes them after the reclaim time."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), grace_s)
        except TimeoutError:
            log.warning("report worker: stopped mid-delivery consumer=%s", self.consumer)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def running(worker: ReportWorker, grace_s: float = 5.0) -> AsyncIterator[ReportWorker]:
    """``worker`` running for the body of the ``async with``, stopped at its end."""
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop(grace_s)

"""The report worker against both stores and real sinks: a webhook server on loopback that
fails or hangs, JSONL files, and worker processes killed with SIGKILL mid-delivery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ReportSettings
from gateway.config import WebhookSink as WebhookSettings
from gateway.records import Delivery
from gateway.report_worker import ReportWorker, running
from gateway.sinks import JsonlSink, Sink, WebhookSink
from gateway.store.base import Store
from tests.support.report_stores import BACKENDS, StoreMaker, report, store_maker, wait_for
from tests.support.servers import REPO, free_port, serve_in_thread
from tests.support.webhook import WebhookReceiver

SECRET = "whsec-0123456789abcdef"
FAST = ReportSettings(retry_base_s=0.05, retry_max_s=0.2, reclaim_after_s=30, max_attempts=4)


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreMaker]:
    async with store_maker(request.param, tmp_path) as maker:
        yield maker


@contextlib.asynccontextmanager
async def opened(make_store: StoreMaker, settings: ReportSettings = FAST) -> AsyncIterator[Store]:
    store = make_store(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@contextlib.contextmanager
def receiving(hook: WebhookReceiver) -> Iterator[str]:
    with serve_in_thread(hook) as base:
        try:
            yield f"{base}/hook"
        finally:
            hook.release()


def webhook(url: str, timeout_s: float = 10.0) -> WebhookSink:
    return WebhookSink(WebhookSettings(url=url, secret=SECRET, timeout_s=timeout_s))


def jsonl_events(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for p in sorted(folder.iterdir()) for x in p.read_text("utf-8").splitlines()]


async def drained(store: Store) -> bool:
    return (await store.reports.outbox())["pending"] == 0


# --- in process ------------------------------------------------------------------------------


async def test_webhook_retries_until_it_takes_the_event(make_store: StoreMaker) -> None:
    hook = WebhookReceiver(fail_first=2, fail_status=503)
    attempts: list[tuple[str, bool]] = []
    with receiving(hook) as url:
        async with opened(make_store) as store:
            sink = webhook(url)
            queued = report(1)
            await store.reports.enqueue(queued)
            worker = ReportWorker(
                store.reports, [sink], block_ms=50, on_attempt=lambda *a: attempts.append(a)
            )
            async with running(worker):
                assert await wait_for(lambda: drained(store))
            await sink.aclose()
    assert [r.status for r in hook.received] == [503, 503, 200]
    events = [r.event for r in hook.received]
    keys = {r.headers["idempotency-key"] for r in hook.received}
    assert len(keys) == 1 and keys == {events[0]["event_id"]}  # the same key on every retry
    assert all(r.signed_with(SECRET) for r in hook.received)
    assert all(e["type"] == "report.queued" and e["report"] == queued.to_dict() for e in events)
    assert attempts == [("webhook", False), ("webhook", False), ("webhook", True)]
    assert (worker.stats.attempts["webhook"], worker.stats.failures["webhook"]) == (3, 2)
    assert (worker.stats.acked, worker.stats.dead) == (1, 0)


async def test_an_unreachable_webhook_ends_in_the_dead_letters(make_store: StoreMaker) -> None:
    dead: list[Delivery] = []
    settings = ReportSettings(retry_base_s=0.05, retry_max_s=0.1, max_attempts=3)
    async with opened(make_store, settings) as store:
        sink = webhook(f"http://127.0.0.1:{free_port()}/hook")
        queued = report(1)
        await store.reports.enqueue(queued)
        worker = ReportWorker(store.reports, [sink], block_ms=50, on_dead=dead.append)
        async with running(worker):
            assert await wait_for(lambda: store.reports.dead_letters())
        await sink.aclose()
        [letter] = await store.reports.dead_letters()
        assert (letter.report, letter.attempts, letter.error) == (queued, 3, "webhook: ConnectError")
        assert await store.reports.outbox() == {"pending": 0, "dead": 1}
    assert [d.report.id for d in dead] == [queued.id]
    assert (worker.stats.failures["webhook"], worker.stats.dead) == (3, 1)


async def test_every_change_reaches_every_sink(make_store: StoreMaker, tmp_path: Path) -> None:
    hook = WebhookReceiver()
    with receiving(hook) as url:
        async with opened(make_store) as store:
            sinks: list[Sink] = [JsonlSink(tmp_path / "jsonl"), webhook(url)]
            first, second = report(1), report(2)
            async with running(ReportWorker(store.reports, sinks, block_ms=50)):
                await store.reports.enqueue(first)
                await store.reports.enqueue(second)
                await store.reports.transition(first.id, "confirmed", "alice", "核实")
                await store.reports.transition(first.id, "filed", "bob")
                await store.reports.transition(second.id, "dismissed", "alice", "误报")
                assert await wait_for(lambda: _delivered(store, hook, 5))
            await sinks[1].aclose()
    lines = [
        json.loads(x) for p in sorted((tmp_path / "jsonl").iterdir()) for x in p.read_text().splitlines()
    ]
    by_webhook = hook.delivered()
    assert sorted(e["event_id"] for e in lines) == sorted(by_webhook)
    steps = [(e["report"]["id"], e["type"], e["report"]["state"]) for e in lines]
    assert sorted(steps) == sorted(
        [
            (first.id, "report.queued", "queued"),
            (second.id, "report.queued", "queued"),
            (first.id, "report.confirmed", "confirmed"),
            (first.id, "report.filed", "filed"),
            (second.id, "report.dismissed", "dismissed"),
        ]
    )
    filed = next(e for e in lines if e["type"] == "report.filed")
    assert [t["actor"] for t in filed["report"]["history"]] == ["alice", "bob"]


async def _delivered(store: Store, hook: WebhookReceiver, n: int) -> bool:
    return len(hook.delivered()) == n and await drained(store)


async def test_a_failing_sink_redelivers_to_all(make_store: StoreMaker, tmp_path: Path) -> None:
    """At least once: the JSONL file took the event before the webhook failed, and gets it again."""
    hook = WebhookReceiver(fail_first=1)
    with receiving(hook) as url:
        async with opened(make_store) as store:
            sinks: list[Sink] = [JsonlSink(tmp_path / "jsonl"), webhook(url)]
            await store.reports.enqueue(report(1))
            async with running(ReportWorker(store.reports, sinks, block_ms=50)):
                assert await wait_for(lambda: drained(store))
            await sinks[1].aclose()
    ids = [e["event_id"] for e in jsonl_events(tmp_path / "jsonl")]
    assert len(ids) == 2 and len(set(ids)) == 1
    assert [r.status for r in hook.received] == [503, 200]


async def test_without_sinks_events_are_acked_and_reports_kept(make_store: StoreMaker) -> None:
    async with opened(make_store) as store:
        made = [report(n) for n in range(3)]
        for one in made:
            await store.reports.enqueue(one)
        worker = ReportWorker(store.reports, [], block_ms=50)
        async with running(worker):
            assert await wait_for(lambda: drained(store))
            await store.reports.transition(made[0].id, "confirmed", "alice")
            assert await wait_for(lambda: drained(store))
        assert worker.stats.acked == 4 and worker.stats.attempts == {}
        assert [r.id for r in (await store.reports.list()).data] == [r.id for r in made[::-1]]
        assert (await store.reports.counts())["confirmed"] == 1


async def test_stop_is_prompt_and_leaves_nothing_running(make_store: StoreMaker) -> None:
    async with opened(make_store) as store:
        worker = ReportWorker(store.reports, [], block_ms=2000)
        task = worker.start()
        await asyncio.sleep(0.1)  # inside a blocking claim now
        started = time.monotonic()
        await worker.stop(grace_s=0.2)
        assert task.done() and time.monotonic() - started < 1.5
        await worker.stop()  # twice is harmless


async def test_stop_cuts_a_hanging_delivery_and_the_event_is_retaken(make_store: StoreMaker) -> None:
    hook = WebhookReceiver(stall_first=1)
    settings = ReportSettings(reclaim_after_s=0.5, retry_base_s=0.05)
    with receiving(hook) as url:
        async with opened(make_store, settings) as store:
            sink = webhook(url, timeout_s=30)
            queued = report(1)
            await store.reports.enqueue(queued)
            first = ReportWorker(store.reports, [sink], consumer="first", block_ms=50)
            first.start()
            assert await wait_for(lambda: _received(hook))
            await first.stop(grace_s=0.1)
            assert await store.reports.outbox() == {"pending": 1, "dead": 0}
            second = ReportWorker(store.reports, [sink], consumer="second", block_ms=50)
            async with running(second):
                assert await wait_for(lambda: drained(store))
            await sink.aclose()
    [event] = hook.delivered().values()
    assert event["report"]["id"] == queued.id
    assert hook.received[0].event["event_id"] == event["event_id"]


async def _received(hook: WebhookReceiver) -> bool:
    return bool(hook.received)


async def test_the_worker_outlives_a_store_outage(tmp_path: Path) -> None:
    """Claims that fail (store closed under it) are retried, and nothing is lost."""
    async with store_maker("sqlite", tmp_path) as make_store:
        store = make_store(FAST)
        worker = ReportWorker(store.reports, [], block_ms=50)
        async with running(worker):
            await asyncio.sleep(0.3)  # the store is not open: claims fail
            await store.open()
            await store.reports.enqueue(report(1))
            assert await wait_for(lambda: drained(store))
        await store.close()
        assert worker.stats.acked == 1


# --- processes killed with SIGKILL -------------------------------------------------------------


def _worker_process(make_store: StoreMaker, config: Path, log: Path) -> subprocess.Popen[bytes]:
    if make_store.backend == "sqlite":
        cmd = [sys.executable, "-m", "gateway", "reports", "worker", "--store", make_store.url]
        cmd += ["--config", str(config)]
    else:
        cmd = [sys.executable, "-m", "tests.support.report_worker_proc", make_store.url, make_store.prefix]
        cmd += [str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODGATE_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.slow
async def test_a_worker_killed_mid_delivery_loses_nothing(make_store: StoreMaker, tmp_path: Path) -> None:
    """kill -9 while the webhook hangs on the first event; a new worker delivers every report."""
    hook = WebhookReceiver(stall_first=1)
    log = tmp_path / "worker.log"
    with receiving(hook) as url:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            "reports:\n"
            f"  webhook: {{url: '{url}', secret: '{SECRET}', timeout_s: 60}}\n"
            "  reclaim_after_s: 1\n  retry_base_s: 0.1\n  retry_max_s: 0.5\n"
        )
        settings = ReportSettings(reclaim_after_s=1)
        async with opened(make_store, settings) as store:
            made = [report(n) for n in range(5)]
            for one in made:
                await store.reports.enqueue(one)
            first = _worker_process(make_store, config, log)
            try:
                assert await wait_for(lambda: _received(hook), within_s=30), log.read_text()
            finally:
                _kill(first)
            assert first.returncode == -signal.SIGKILL
            assert hook.delivered() == {}  # the hanging request was the only one
            assert await store.reports.outbox() == {"pending": 5, "dead": 0}

            second = _worker_process(make_store, config, log)
            try:
                assert await wait_for(lambda: _delivered(store, hook, 5), within_s=30), log.read_text()
                second.send_signal(signal.SIGTERM)
                assert second.wait(timeout=15) == 0, log.read_text()
            finally:
                _kill(second)
            assert await store.reports.outbox() == {"pending": 0, "dead": 0}
    delivered = hook.delivered()
    assert sorted(e["report"]["id"] for e in delivered.values()) == sorted(r.id for r in made)
    assert hook.received[0].event["event_id"] in delivered  # the cut-off event, same idempotency key
    assert all(r.signed_with(SECRET) for r in hook.received)

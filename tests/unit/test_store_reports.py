"""The report store and its outbox: the same behaviour from the SQLite and the Redis backend.

Redis runs for real on loopback (database 12, a key prefix per test, deleted afterwards).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import ReportSettings
from gateway.records import Delivery, InvalidTransition, Report
from gateway.store.base import Store
from gateway.store.outbox import retry_delay
from gateway.store.redis import RedisStore
from gateway.store.redis_reports import GROUP
from tests.support.report_stores import BACKENDS, StoreMaker, report, store_maker, wait_for

FAST = ReportSettings(retry_base_s=0.05, retry_max_s=0.05, reclaim_after_s=30, max_attempts=3)


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreMaker]:
    async with store_maker(request.param, tmp_path) as maker:
        yield maker


@pytest.fixture
async def store(make_store: StoreMaker) -> AsyncIterator[Store]:
    opened = make_store(FAST)
    await opened.open()
    yield opened
    await opened.close()


async def claim_all(store: Store, consumer: str = "c1") -> list[Delivery]:
    return await store.reports.claim(consumer, count=100)


# --- reports and their lifecycle ---------------------------------------------------------------


async def test_enqueue_and_get(store: Store) -> None:
    queued = report(1)
    await store.reports.enqueue(queued)
    assert await store.reports.get(queued.id) == queued
    assert await store.reports.get("rpt_unknown") is None
    assert await store.reports.get("' OR '1'='1") is None


async def test_enqueue_refuses_a_report_that_is_not_queued(store: Store) -> None:
    with pytest.raises(ValueError, match="only queued"):
        await store.reports.enqueue(report(1, state="confirmed"))
    assert (await store.reports.list()).data == []
    assert await store.reports.outbox() == {"pending": 0, "dead": 0}


async def test_enqueue_refuses_an_id_twice(store: Store) -> None:
    queued = report(1)
    await store.reports.enqueue(queued)
    await store.reports.transition(queued.id, "confirmed", "alice")
    with pytest.raises(ValueError, match="exists already"):
        await store.reports.enqueue(queued)
    got = await store.reports.get(queued.id)
    assert got is not None and got.state == "confirmed"
    assert await store.reports.counts() == {"queued": 0, "confirmed": 1, "dismissed": 0, "filed": 0}
    assert await store.reports.outbox() == {"pending": 2, "dead": 0}


async def test_lifecycle_records_who_when_and_why(store: Store) -> None:
    queued = report(1)
    await store.reports.enqueue(queued)
    confirmed = await store.reports.transition(queued.id, "confirmed", "alice", "匹配规则 A.1.d", at=100.0)
    filed = await store.reports.transition(queued.id, "filed", "bob", "filed with CAC, ref 42", at=200.0)
    assert confirmed.state == "confirmed" and filed.state == "filed"
    got = await store.reports.get(queued.id)
    assert got == filed
    assert got is not None and got.updated_at == 200.0 and got.created_at == queued.created_at
    steps = [(t.from_state, t.to_state, t.actor, t.at, t.note) for t in got.history]
    assert steps == [
        ("queued", "confirmed", "alice", 100.0, "匹配规则 A.1.d"),
        ("confirmed", "filed", "bob", 200.0, "filed with CAC, ref 42"),
    ]


async def test_transition_time_defaults_to_now(store: Store) -> None:
    queued = report(1)
    await store.reports.enqueue(queued)
    before = time.time()
    moved = await store.reports.transition(queued.id, "dismissed", "carol")
    assert before <= moved.history[-1].at <= time.time()
    assert moved.history[-1].note == ""


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], "filed"),
        ([], "queued"),
        (["dismissed"], "confirmed"),
        (["dismissed"], "filed"),
        (["confirmed"], "dismissed"),
        (["confirmed", "filed"], "confirmed"),
    ],
)
async def test_invalid_transitions_change_nothing(store: Store, path: list[str], bad: str) -> None:
    queued = report(1)
    await store.reports.enqueue(queued)
    for step in path:
        await store.reports.transition(queued.id, step, "alice")  # type: ignore[arg-type]
    before = await store.reports.get(queued.id)
    pending = await store.reports.outbox()
    with pytest.raises(InvalidTransition):
        await store.reports.transition(queued.id, bad, "mallory", "should not stick")  # type: ignore[arg-type]
    assert await store.reports.get(queued.id) == before
    assert await store.reports.outbox() == pending  # no event for a refused step


async def test_transition_of_an_unknown_report_is_a_key_error(store: Store) -> None:
    with pytest.raises(KeyError):
        await store.reports.transition("rpt_nope", "confirmed", "alice")
    assert await store.reports.outbox() == {"pending": 0, "dead": 0}


async def test_concurrent_transitions_only_one_wins(store: Store) -> None:
    queued = report(1)
    await store.reports.enqueue(queued)
    results = await asyncio.gather(
        store.reports.transition(queued.id, "confirmed", "alice"),
        store.reports.transition(queued.id, "dismissed", "bob"),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, Report)]
    assert len(wins) == 1 and sum(isinstance(r, InvalidTransition) for r in results) == 1
    got = await store.reports.get(queued.id)
    assert got is not None and got.state == wins[0].state and len(got.history) == 1
    assert sorted(d.kind for d in await claim_all(store)) == sorted(["report.queued", f"report.{got.state}"])


async def test_list_is_newest_first_paged_and_filtered_by_state(store: Store) -> None:
    reports = [report(n) for n in range(7)]
    shuffled = reports[:]
    random.Random(4).shuffle(shuffled)
    for one in shuffled:
        await store.reports.enqueue(one)
    for one in reports[1:4]:
        await store.reports.transition(one.id, "confirmed", "alice")
    await store.reports.transition(reports[5].id, "dismissed", "alice")

    assert [r.id for r in (await store.reports.list()).data] == [r.id for r in reports[::-1]]
    confirmed = (await store.reports.list("confirmed")).data
    assert [r.id for r in confirmed] == [reports[3].id, reports[2].id, reports[1].id]
    assert all(r.state == "confirmed" for r in confirmed)
    assert [r.id for r in (await store.reports.list("queued")).data] == [
        reports[6].id,
        reports[4].id,
        reports[0].id,
    ]
    assert (await store.reports.list("filed")).data == []
    assert (await store.reports.list(limit=0)).data == []

    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.reports.list("confirmed", limit=2, after=after)
        seen += [r.id for r in page.data]
        if page.next is None:
            break
        assert page.next == page.data[-1].id
        after = page.next
    assert seen == [r.id for r in confirmed]


async def test_counts_every_state(store: Store) -> None:
    assert await store.reports.counts() == {"queued": 0, "confirmed": 0, "dismissed": 0, "filed": 0}
    reports = [report(n) for n in range(5)]
    for one in reports:
        await store.reports.enqueue(one)
    await store.reports.transition(reports[0].id, "confirmed", "a")
    await store.reports.transition(reports[0].id, "filed", "a")
    await store.reports.transition(reports[1].id, "confirmed", "a")
    await store.reports.transition(reports[2].id, "dismissed", "a")
    assert await store.reports.counts() == {"queued": 2, "confirmed": 1, "dismissed": 1, "filed": 1}


# --- the outbox --------------------------------------------------------------------------------


async def test_each_report_and_each_change_is_one_event(store: Store) -> None:
    first, second = report(1), report(2)
    await store.reports.enqueue(first)
    await store.reports.enqueue(second)
    await store.reports.transition(first.id, "confirmed", "alice", "ok")
    got = await claim_all(store)
    assert [(d.kind, d.report.id, d.report.state) for d in got] == [
        ("report.queued", first.id, "queued"),
        ("report.queued", second.id, "queued"),
        ("report.confirmed", first.id, "confirmed"),
    ]
    assert got[0].report == first  # the report as it was when the event was made
    assert got[2].report.history[-1].actor == "alice"
    assert len({d.event_id for d in got}) == 3 and all(d.event_id.startswith("evt_") for d in got)
    assert all(d.attempts == 0 for d in got)


async def test_claimed_events_are_not_handed_out_twice(store: Store) -> None:
    for n in range(6):
        await store.reports.enqueue(report(n))
    first = await store.reports.claim("c1", count=4)
    rest = await store.reports.claim("c2", count=4)
    assert len(first) == 4 and len(rest) == 2
    assert await store.reports.claim("c3", count=4) == []
    assert {d.event_id for d in first}.isdisjoint(d.event_id for d in rest)
    assert await store.reports.outbox() == {"pending": 6, "dead": 0}


async def test_concurrent_consumers_share_without_overlap(store: Store) -> None:
    for n in range(20):
        await store.reports.enqueue(report(n))
    batches = await asyncio.gather(*(store.reports.claim(f"c{i}", count=3) for i in range(10)))
    ids = [d.event_id for batch in batches for d in batch]
    assert len(ids) == 20 and len(set(ids)) == 20


async def test_ack_removes_the_event(store: Store) -> None:
    for n in range(3):
        await store.reports.enqueue(report(n))
    got = await claim_all(store)
    for one in got[:2]:
        await store.reports.ack(one)
    assert await store.reports.outbox() == {"pending": 1, "dead": 0}
    await store.reports.ack(got[2])
    await store.reports.ack(got[2])  # twice is harmless
    assert await store.reports.outbox() == {"pending": 0, "dead": 0}
    assert await claim_all(store, "c2") == []
    assert len((await store.reports.list()).data) == 3  # the reports stay


async def test_unacked_events_are_reclaimed_after_the_reclaim_time(make_store: StoreMaker) -> None:
    """At least once: a consumer that claimed and died leaves its events to another one."""
    settings = ReportSettings(reclaim_after_s=0.4)
    store = make_store(settings)
    await store.open()
    try:
        for n in range(3):
            await store.reports.enqueue(report(n))
        crashed = await store.reports.claim("crashed", count=10)
        assert len(crashed) == 3
        assert await store.reports.claim("survivor", count=10) == []  # still fresh
        started = time.monotonic()
        retaken = await wait_for(lambda: store.reports.claim("survivor", count=10))
        assert time.monotonic() - started >= 0.3
        assert [d.event_id for d in retaken] == [d.event_id for d in crashed]
        assert [d.report for d in retaken] == [d.report for d in crashed]
        for one in retaken:
            await store.reports.ack(one)
        assert await store.reports.outbox() == {"pending": 0, "dead": 0}
    finally:
        await store.close()


async def test_a_failed_event_waits_for_its_backoff(make_store: StoreMaker) -> None:
    settings = ReportSettings(retry_base_s=0.5, retry_max_s=10, max_attempts=5, reclaim_after_s=30)
    store = make_store(settings)
    await store.open()
    try:
        await store.reports.enqueue(report(1))
        [first] = await claim_all(store)
        assert await store.reports.fail(first, "webhook: HTTP 503") is False
        failed_at = time.monotonic()
        assert await claim_all(store, "c2") == []  # not before its due time
        assert await store.reports.outbox() == {"pending": 1, "dead": 0}
        [second] = await wait_for(lambda: claim_all(store, "c2"))
        assert time.monotonic() - failed_at >= 0.45
        assert (second.event_id, second.attempts) == (first.event_id, 1)

        assert await store.reports.fail(second, "webhook: HTTP 503") is False
        failed_at = time.monotonic()
        await asyncio.sleep(0.6)  # past the first delay, not yet past the doubled one
        assert await claim_all(store, "c3") == []
        [third] = await wait_for(lambda: claim_all(store, "c3"))
        assert time.monotonic() - failed_at >= 0.95
        assert (third.event_id, third.attempts) == (first.event_id, 2)
    finally:
        await store.close()


async def test_backoff_is_capped(make_store: StoreMaker) -> None:
    settings = ReportSettings(retry_base_s=0.1, retry_max_s=0.15, max_attempts=10, reclaim_after_s=30)
    assert [retry_delay(n, settings) for n in (1, 2, 3, 4)] == [0.1, 0.15, 0.15, 0.15]
    store = make_store(settings)
    await store.open()
    try:
        await store.reports.enqueue(report(1))
        [event] = await claim_all(store)
        for _ in range(4):
            await store.reports.fail(event, "down")
            failed_at = time.monotonic()
            [event] = await wait_for(lambda: claim_all(store), every=0.01)
        # The uncapped fourth delay would be 0.8 s.
        assert time.monotonic() - failed_at < 0.6
        assert event.attempts == 4
    finally:
        await store.close()


async def test_dead_letter_after_max_attempts(store: Store) -> None:
    kept, doomed = report(1), report(2)
    await store.reports.enqueue(kept)
    await store.reports.enqueue(doomed)
    events = await claim_all(store)
    await store.reports.ack(events[0])
    event = events[1]
    outcomes = []
    for attempt in range(1, 4):
        outcomes.append(await store.reports.fail(event, f"webhook: HTTP 500 (try {attempt})"))
        if attempt < 3:
            [event] = await wait_for(lambda: claim_all(store))
            assert event.attempts == attempt
    assert outcomes == [False, False, True]
    assert await store.reports.outbox() == {"pending": 0, "dead": 1}
    await asyncio.sleep(0.1)
    assert await claim_all(store) == []
    [dead] = await store.reports.dead_letters()
    assert (dead.event_id, dead.kind, dead.attempts) == (events[1].event_id, "report.queued", 3)
    assert dead.report == doomed and dead.error == "webhook: HTTP 500 (try 3)"
    assert await store.reports.get(doomed.id) == doomed  # the report itself stays
    assert await store.reports.dead_letters(limit=0) == []


async def test_fail_after_ack_changes_nothing(store: Store) -> None:
    await store.reports.enqueue(report(1))
    [event] = await claim_all(store)
    await store.reports.ack(event)
    assert await store.reports.fail(event, "late") is False
    assert await store.reports.outbox() == {"pending": 0, "dead": 0}
    await asyncio.sleep(0.1)
    assert await claim_all(store) == []


async def test_blocking_claim_waits_for_new_events(store: Store) -> None:
    started = time.monotonic()
    assert await store.reports.claim("c1", block_ms=300) == []
    assert time.monotonic() - started >= 0.25
    queued = report(1)

    async def enqueue_later() -> None:
        await asyncio.sleep(0.2)
        await store.reports.enqueue(queued)

    started = time.monotonic()
    got, _ = await asyncio.gather(store.reports.claim("c1", block_ms=5000), enqueue_later())
    assert [d.report.id for d in got] == [queued.id]
    assert time.monotonic() - started < 3


async def test_outbox_survives_close_and_reopen(make_store: StoreMaker) -> None:
    first = make_store(ReportSettings(reclaim_after_s=0.2))
    await first.open()
    queued = [report(n) for n in range(3)]
    for one in queued:
        await first.reports.enqueue(one)
    claimed = await first.reports.claim("doomed", count=1)
    await first.close()  # as if the process died with one event claimed and two never read

    second = make_store(ReportSettings(reclaim_after_s=0.2))
    await second.open()
    try:
        await asyncio.sleep(0.3)
        got = await claim_all(second, "restarted")
        assert sorted(d.report.id for d in got) == sorted(r.id for r in queued)
        assert claimed[0].event_id in {d.event_id for d in got}
        assert await second.reports.counts() == {"queued": 3, "confirmed": 0, "dismissed": 0, "filed": 0}
    finally:
        await second.close()


# --- Redis only ----------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_outbox_is_a_stream_with_a_consumer_group(tmp_path: Path) -> None:
    async with store_maker("redis", tmp_path) as make_store:
        await _check_redis_layout(make_store)


async def _check_redis_layout(make_store: StoreMaker) -> None:
    store = make_store(FAST)
    await store.open()
    try:
        assert isinstance(store, RedisStore)
        queued = report(1)
        await store.reports.enqueue(queued)
        stream = f"{make_store.prefix}reports:outbox"
        assert await store.redis.xlen(stream) == 1
        [event] = await store.reports.claim("c1")
        [group] = await store.redis.xinfo_groups(stream)
        assert (group["name"], group["pending"]) == (GROUP, 1)
        await store.reports.ack(event)
        assert (await store.redis.xinfo_groups(stream))[0]["pending"] == 0
        keys = sorted([k async for k in store.redis.scan_iter(match=f"{make_store.prefix}*")])
        assert keys == sorted(
            f"{make_store.prefix}{k}"
            for k in (f"report:{queued.id}", "reports", "reports:state:queued", "reports:outbox")
        )
    finally:
        await store.close()

"""Tests for gateway.store: the same behaviour from the SQLite and the Redis backend.

Redis runs for real on loopback (``make test`` starts one); each test uses its own key prefix
in database 13 and deletes its keys afterwards. Deselect with ``-m "not redis"``.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from classifiers.base import Span
from gateway.incidents import Incident, build_incident
from gateway.screening import Decision, Hit, Segment
from gateway.store.base import Store, open_store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore
from tests.support.stores import REDIS_URL, StoreFactory, delete_prefix

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def incident(n: int, created_at: float | None = None, **fields: object) -> Incident:
    values: dict[str, object] = {
        "id": f"inc_{n:04d}_{uuid.uuid4().hex[:8]}",
        "created_at": 1_700_000_000.0 + n if created_at is None else created_at,
        "request_id": f"req-{n}",
        "tenant": "租户甲",
        "route": "qwen-team-a",
        "model": "qwen-max",
        "direction": "output",
        "channel": "content",
        "action": "block",
        "risks": [{"code": "A.1.d", "score": 1.0, "classifier": "banned-terms", "action": "block"}],
        "policy": "default",
        "policy_version": "0123456789abcdef",
        "excerpt": f"第{n}条：请告诉我炸药配方 — tell me the zorblax recipe",
        "offsets": [[6, 10], [30, 37]],
        "exposed_chars": 0,
    }
    values.update(fields)
    return Incident(**values)  # type: ignore[arg-type]


# --- open_store ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:///data/modgate.db", SQLiteStore),
        ("sqlite:////var/lib/modgate/数据.db", SQLiteStore),
        ("redis://127.0.0.1:6379/0", RedisStore),
        ("rediss://cache.internal:6380/2", RedisStore),
    ],
)
async def test_open_store_picks_the_backend(url: str, kind: type) -> None:
    store = open_store(url)
    assert isinstance(store, kind)
    assert store.url == url
    await store.close()  # never opened: closing is still clean


@pytest.mark.parametrize("url", ["postgres://db/modgate", "sqlite://relative.db", "memory://", ""])
def test_open_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_store(url)


# --- both backends ---------------------------------------------------------------------------


async def test_ping_when_open(store: Store) -> None:
    assert await store.ping() is True


async def test_ping_before_open_and_after_close(make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.ping() is False
    await store.open()
    assert await store.ping() is True
    await store.close()
    assert await store.ping() is False


async def test_record_and_get(store: Store) -> None:
    recorded = incident(1, exposed_chars=3, model=None)
    await store.incidents.record(recorded)
    got = await store.incidents.get(recorded.id)
    assert got == recorded
    assert got is not None
    assert got.excerpt == "第1条：请告诉我炸药配方 — tell me the zorblax recipe"
    assert got.tenant == "租户甲"
    assert got.offsets == [[6, 10], [30, 37]]


async def test_awkward_text_round_trips(store: Store) -> None:
    text = "引号 \"quoted\" 'single' \\ back\nnew line\ttab 😀 \u200b zero-width \x00 nul"
    text += "'); DROP TABLE incidents;--"
    recorded = incident(2, excerpt=text, route="路由/一", request_id="req-'\"")
    await store.incidents.record(recorded)
    assert await store.incidents.get(recorded.id) == recorded


async def test_unknown_id_is_none(store: Store) -> None:
    await store.incidents.record(incident(1))
    assert await store.incidents.get("inc_does_not_exist") is None
    assert await store.incidents.get("") is None
    assert await store.incidents.get("' OR '1'='1") is None


async def test_recent_is_newest_first_and_limited(store: Store) -> None:
    incidents = [incident(n) for n in range(8)]
    shuffled = incidents[:]
    random.Random(7).shuffle(shuffled)
    for one in shuffled:
        await store.incidents.record(one)
    newest_first = incidents[::-1]
    assert (await store.incidents.list(3)).data == newest_first[:3]
    assert (await store.incidents.list(1)).data == newest_first[:1]
    assert (await store.incidents.list(100)).data == newest_first
    assert (await store.incidents.list()).data == newest_first


async def test_recent_default_limit_is_50(store: Store) -> None:
    for n in range(55):
        await store.incidents.record(incident(n))
    recent = (await store.incidents.list()).data
    assert len(recent) == 50
    assert [i.request_id for i in recent[:2]] == ["req-54", "req-53"]
    assert recent[-1].request_id == "req-5"


async def test_recent_with_limit_zero_is_empty(store: Store) -> None:
    for n in range(3):
        await store.incidents.record(incident(n))
    assert (await store.incidents.list(0)).data == []


async def test_recent_on_an_empty_store(store: Store) -> None:
    assert (await store.incidents.list()).data == []
    assert (await store.incidents.list(5)).data == []


async def test_concurrent_writes_all_land(store: Store) -> None:
    incidents = [incident(n) for n in range(25)]
    await asyncio.gather(*(store.incidents.record(i) for i in incidents))
    assert (await store.incidents.list(100)).data == incidents[::-1]
    got = await asyncio.gather(*(store.incidents.get(i.id) for i in incidents))
    assert got == incidents


async def test_incidents_survive_close_and_reopen(make_store: StoreFactory) -> None:
    first = make_store()
    await first.open()
    recorded = [incident(n) for n in range(3)]
    for one in recorded:
        await first.incidents.record(one)
    await first.close()

    second = make_store()
    await second.open()
    try:
        assert await second.incidents.get(recorded[1].id) == recorded[1]
        assert (await second.incidents.list(10)).data == recorded[::-1]
        await second.incidents.record(incident(3))
        assert len((await second.incidents.list(10)).data) == 4
    finally:
        await second.close()


async def test_built_incident_round_trips(store: Store) -> None:
    text = "好的。这是炸药配方：……"
    spans = (Span(5, 9, "A.1.d"),)
    decision = Decision(
        "block",
        "output",
        "default",
        "0123456789abcdef",
        (Hit("A.1.d", 1.0, "banned-terms", "block", 0, spans),),
    )
    built = build_incident(
        decision,
        [Segment(text, "content", (0, "content", -1))],
        request_id="req-1",
        tenant="t",
        route="r",
        model="m",
        exposed_chars=0,
    )
    await store.incidents.record(built)
    got = await store.incidents.get(built.id)
    assert got == built
    assert got is not None
    assert got.excerpt == text
    assert got.offsets == [[5, 9]]
    assert got.risks == [{"code": "A.1.d", "score": 1.0, "classifier": "banned-terms", "action": "block"}]


async def test_pages_follow_the_cursor_to_the_end(store: Store) -> None:
    recorded = [incident(n) for n in range(7)]
    for one in recorded:
        await store.incidents.record(one)
    seen: list[Incident] = []
    after: str | None = None
    pages = 0
    while True:
        page = await store.incidents.list(3, after=after)
        seen.extend(page.data)
        pages += 1
        if page.next is None:
            break
        assert page.next == page.data[-1].id
        after = page.next
    assert seen == recorded[::-1]
    assert pages == 3
    exact = await store.incidents.list(7)
    assert exact.next is None and len(exact.data) == 7


async def test_purge_deletes_only_older_incidents(store: Store) -> None:
    old = [incident(n, created_at=1_000.0 + n) for n in range(3)]
    new = [incident(10 + n, created_at=5_000.0 + n) for n in range(2)]
    for one in old + new:
        await store.incidents.record(one)
    assert await store.incidents.purge(before=1_001.5) == 2
    assert [i.id for i in (await store.incidents.list()).data] == [i.id for i in (old[2:] + new)[::-1]]
    assert await store.incidents.get(old[0].id) is None
    assert await store.incidents.purge(before=5_000.0) == 1
    assert await store.incidents.purge(before=5_000.0) == 0
    assert (await store.incidents.list()).data == new[::-1]


async def test_secret_is_made_once_and_kept(make_store: StoreFactory) -> None:
    first = make_store()
    await first.open()
    try:
        made = await asyncio.gather(*(first.secret("pseudonym") for _ in range(5)))
        assert len(set(made)) == 1 and len(made[0]) == 64
        assert await first.secret("other") != made[0]
    finally:
        await first.close()
    second = make_store()
    await second.open()
    try:
        assert await second.secret("pseudonym") == made[0]
    finally:
        await second.close()


# --- one backend -----------------------------------------------------------------------------


async def test_sqlite_file_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "数据" / "modgate.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    recorded = incident(1)
    await store.incidents.record(recorded)
    await store.close()
    assert path.is_file()

    reopened = open_store(f"sqlite:///{path}")
    await reopened.open()
    try:
        assert await reopened.incidents.get(recorded.id) == recorded
    finally:
        await reopened.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda: RedisStore(UNREACHABLE_REDIS, prefix=f"modgate-test-{uuid.uuid4().hex}:"),
        lambda: open_store(UNREACHABLE_REDIS),
    ],
)
async def test_redis_unreachable_pings_false(make: StoreFactory) -> None:
    store = make()
    await store.open()  # connections are lazy: opening does not fail
    try:
        assert await store.ping() is False
    finally:
        await store.close()


async def test_sqlite_has_no_warnings(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    await store.open()
    try:
        assert await store.warnings() == []
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_without_persistence_warns() -> None:
    """The test Redis runs with --save "" --appendonly no, as DEVELOPERS.md starts it."""
    store = RedisStore(REDIS_URL, prefix=f"modgate-test-{uuid.uuid4().hex}:")
    await store.open()
    try:
        config = {**await store.redis.config_get("appendonly"), **await store.redis.config_get("save")}
        warnings = await store.warnings()
        if config["appendonly"] == "no" and not config["save"].strip():
            assert warnings and "persistence is off" in warnings[0]
        else:
            assert warnings == []
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_keys_live_under_the_prefix() -> None:
    prefix = f"modgate-test-{uuid.uuid4().hex}:"
    store = RedisStore(REDIS_URL, prefix=prefix)
    await store.open()
    try:
        recorded = incident(1)
        await store.incidents.record(recorded)
        keys = sorted([key async for key in store.redis.scan_iter(match=f"{prefix}*")])
        expected = [f"{prefix}incident:{recorded.id}", f"{prefix}incidents", f"{prefix}incidents:by-time"]
        assert keys == expected
        # Another prefix on the same database sees nothing.
        other = RedisStore(REDIS_URL, prefix=f"modgate-test-{uuid.uuid4().hex}:")
        await other.open()
        try:
            assert await other.incidents.get(recorded.id) is None
            assert (await other.incidents.list()).data == []
        finally:
            await other.close()
    finally:
        await delete_prefix(prefix)
        await store.close()


async def test_sqlite_group_commit_undoes_only_the_transaction_that_failed(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/g.db")
    await store.open()
    try:
        run = store._run

        def insert(name: str, fail: bool = False) -> Callable[[sqlite3.Connection], str]:
            def write(db: sqlite3.Connection) -> str:
                db.execute("INSERT INTO secrets (name, value) VALUES (?, 'v')", (name,))
                if fail:
                    raise ValueError(name)
                return name

            return write

        # Arrive together: they share commits, each in its own savepoint.
        results = await asyncio.gather(
            *(run.transaction(insert(f"n{i}", fail=i % 3 == 1)) for i in range(9)), return_exceptions=True
        )
        assert [isinstance(r, ValueError) for r in results] == [i % 3 == 1 for i in range(9)]
        rows = await run(lambda db: [r[0] for r in db.execute("SELECT name FROM secrets ORDER BY name")])
        assert rows == sorted(f"n{i}" for i in range(9) if i % 3 != 1)
        duplicate = await asyncio.gather(run.transaction(insert("n0")), return_exceptions=True)
        assert isinstance(duplicate[0], sqlite3.IntegrityError)
    finally:
        await store.close()


async def test_a_report_and_its_incident_are_written_together(store: Store) -> None:
    from tests.support.report_stores import report

    first = incident(1)
    queued = report(1, incident_id=first.id)
    await store.reports.enqueue(queued, first)
    assert await store.incidents.get(first.id) == first
    assert await store.reports.get(queued.id) == queued
    assert (await store.reports.outbox())["pending"] == 1

    second = incident(2)
    with pytest.raises(ValueError, match="exists already"):
        await store.reports.enqueue(queued, second)  # the report id is taken: nothing is written
    assert await store.incidents.get(second.id) is None
    assert (await store.reports.outbox())["pending"] == 1

"""UserStore contract: the same behaviour from the SQLite and the Redis backend.

Redis runs for real on loopback, database 11, a key prefix per test, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest

from gateway.records import UserRecord, UserStatus
from gateway.store.base import Store
from gateway.store.redis import RedisStore
from gateway.store.sqlite_users import HISTORY_MAX
from tests.support.stores import REDIS_URL, StoreFactory

T0 = 1_700_000_000.0


async def test_unknown_user_is_none(store: Store) -> None:
    assert await store.users.get("u_nobody") is None


async def test_strike_creates_the_user_and_records_it(store: Store) -> None:
    record = await store.users.strike("u_1", T0, 3600, detail="incident inc_1")
    assert record.user == "u_1"
    assert record.status == "ok" and record.until is None
    assert record.strikes == [T0]
    assert len(record.history) == 1
    event = record.history[0]
    assert (event.kind, event.at, event.detail, event.actor) == ("strike", T0, "incident inc_1", "gateway")
    assert await store.users.get("u_1") == record
    assert await store.users.get("u_1", history=False) == UserRecord("u_1", "ok", None, [T0])


async def test_strikes_older_than_the_window_are_forgotten(store: Store) -> None:
    await store.users.strike("u_1", T0, 100)
    await store.users.strike("u_1", T0 + 50, 100)
    record = await store.users.strike("u_1", T0 + 120, 100)
    assert record.strikes == [T0 + 50, T0 + 120]
    assert [e.kind for e in record.history] == ["strike"] * 3  # the history keeps them all


async def test_two_strikes_at_the_same_instant_both_count(store: Store) -> None:
    await store.users.strike("u_1", T0, 100)
    record = await store.users.strike("u_1", T0, 100)
    assert record.strikes == [T0, T0]


async def test_users_are_separate(store: Store) -> None:
    await store.users.strike("u_a", T0, 100)
    await store.users.set_status("u_a", "suspended", None, "gateway")
    record = await store.users.strike("u_b", T0, 100)
    assert record.status == "ok" and record.strikes == [T0]
    a = await store.users.get("u_a")
    assert a is not None and a.status == "suspended" and a.strikes == [T0]


async def test_concurrent_strikes_all_count_across_replicas(make_store: StoreFactory) -> None:
    replicas = [make_store(), make_store()]
    for replica in replicas:
        await replica.open()
    try:
        now = time.time()
        strikes = [replicas[i % 2].users.strike("u_busy", now + i / 1000, 3600) for i in range(30)]
        records = await asyncio.gather(*strikes)
        assert sorted(len(r.strikes) for r in records)[-1] == 30
        final = await replicas[0].users.get("u_busy")
        assert final is not None and len(final.strikes) == 30
        assert sum(e.kind == "strike" for e in final.history) == 30
    finally:
        for replica in replicas:
            await replica.close()


async def test_set_status_records_the_change(store: Store) -> None:
    record = await store.users.set_status("u_1", "restricted", T0 + 60, "gateway", "3 strikes", at=T0)
    assert record.status == "restricted" and record.until == T0 + 60
    assert record.strikes == []
    (event,) = record.history
    assert (event.kind, event.status, event.actor, event.detail, event.at) == (
        "status",
        "restricted",
        "gateway",
        "3 strikes",
        T0,
    )
    record = await store.users.set_status("u_1", "suspended", None, "admin-alice", at=T0 + 1)
    assert record.status == "suspended" and record.until is None
    assert [e.status for e in record.history] == ["restricted", "suspended"]


async def test_escalate_never_lowers_a_live_status(store: Store) -> None:
    await store.users.set_status("u_1", "suspended", T0 + 100, "gateway", at=T0)
    kept = await store.users.set_status("u_1", "restricted", T0 + 50, "gateway", at=T0 + 1, escalate=True)
    assert kept.status == "suspended" and kept.until == T0 + 100
    assert len(kept.history) == 1  # nothing changed, nothing recorded
    # Once the suspension has ended, a lower status applies.
    after = await store.users.set_status("u_1", "restricted", None, "gateway", at=T0 + 100, escalate=True)
    assert after.status == "restricted" and after.until is None
    # Without escalate an admin may set any status.
    lowered = await store.users.set_status("u_1", "warned", None, "admin", at=T0 + 101)
    assert lowered.status == "warned"


async def test_concurrent_escalations_end_at_the_strongest(store: Store) -> None:
    statuses: list[UserStatus] = ["warned", "restricted", "suspended", "restricted", "warned"]
    for round_ in range(6):
        random.Random(round_).shuffle(statuses)
        user = f"u_race{round_}"
        changes = [store.users.set_status(user, s, None, "gateway", escalate=True) for s in statuses]
        await asyncio.gather(*changes)
        record = await store.users.get(user)
        assert record is not None and record.status == "suspended"


async def test_reinstate_clears_strikes_and_status(store: Store) -> None:
    now = time.time()
    for i in range(3):
        await store.users.strike("u_1", now + i, 3600)
    await store.users.set_status("u_1", "suspended", None, "gateway")
    assert not await store.users.hit_rate("u_1", 0, 60)
    record = await store.users.reinstate("u_1", "admin-bob", "appeal accepted", at=now + 10)
    assert record.status == "ok" and record.until is None and record.strikes == []
    last = record.history[-1]
    assert (last.kind, last.status, last.actor, last.detail) == (
        "reinstate",
        "ok",
        "admin-bob",
        "appeal accepted",
    )
    assert [e.kind for e in record.history] == ["strike"] * 3 + ["status", "reinstate"]
    assert await store.users.get("u_1") == record
    # A reinstated user starts the ladder again from zero.
    again = await store.users.strike("u_1", now + 11, 3600)
    assert again.strikes == [now + 11]


async def test_reinstate_of_an_unknown_user_creates_a_clean_record(store: Store) -> None:
    record = await store.users.reinstate("u_new", "admin")
    assert record.status == "ok" and record.strikes == [] and record.history[-1].kind == "reinstate"


async def test_history_is_bounded(store: Store) -> None:
    now = time.time()
    for i in range(HISTORY_MAX + 5):
        await store.users.strike("u_1", now + i / 1000, 0.001, detail=f"incident {i}")
    record = await store.users.get("u_1")
    assert record is not None
    assert len(record.history) == HISTORY_MAX
    assert record.history[0].detail == "incident 5"
    assert record.history[-1].detail == f"incident {HISTORY_MAX + 4}"
    assert len(record.strikes) <= 2  # a 1 ms window keeps next to nothing


async def test_hit_rate_is_a_sliding_window(store: Store) -> None:
    assert [await store.users.hit_rate("u_1", 3, 60, at=T0 + i) for i in range(4)] == [True] * 3 + [False]
    assert await store.users.hit_rate("u_1", 3, 60, at=T0 + 59) is False
    # The first request falls out of the window at T0 + 60; refused ones were never counted.
    assert await store.users.hit_rate("u_1", 3, 60, at=T0 + 60) is True
    assert await store.users.hit_rate("u_1", 3, 60, at=T0 + 60.5) is False
    assert await store.users.hit_rate("u_2", 3, 60, at=T0 + 60.5) is True  # per user


async def test_hit_rate_under_concurrency_admits_exactly_the_limit(make_store: StoreFactory) -> None:
    replicas = [make_store(), make_store()]
    for replica in replicas:
        await replica.open()
    try:
        now = time.time()
        hits = [replicas[i % 2].users.hit_rate("u_flood", 7, 60, at=now) for i in range(25)]
        assert sum(await asyncio.gather(*hits)) == 7
    finally:
        for replica in replicas:
            await replica.close()


async def test_state_survives_close_and_reopen(make_store: StoreFactory) -> None:
    first = make_store()
    await first.open()
    now = time.time()
    await first.users.strike("u_1", now, 3600, "incident inc_x")
    recorded = await first.users.set_status("u_1", "warned", None, "gateway", "1 strike", at=now)
    await first.close()
    second = make_store()
    await second.open()
    try:
        assert await second.users.get("u_1") == recorded
    finally:
        await second.close()


@pytest.mark.redis
async def test_redis_user_keys_live_under_the_prefix() -> None:
    prefix = f"modgate-test-{uuid.uuid4().hex}:"
    store = RedisStore(REDIS_URL, prefix=prefix)
    await store.open()
    try:
        now = time.time()
        await store.users.strike("u_k", now, 60)
        await store.users.hit_rate("u_k", 5, 30)
        keys = sorted([key async for key in store.redis.scan_iter(match=f"{prefix}*")])
        user = f"{prefix}user:u_k"
        assert keys == [user, f"{user}:history", f"{user}:hits", f"{user}:strikes"]
        # Strikes and hits expire on their own once out of their windows.
        assert 0 < await store.redis.pttl(f"{user}:strikes") <= 60_001
        assert 0 < await store.redis.pttl(f"{user}:hits") <= 30_000
        assert await store.redis.pttl(user) == -1  # the status and history are kept
    finally:
        keys = [key async for key in store.redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await store.redis.delete(*keys)
        await store.close()

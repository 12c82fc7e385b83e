"""ComplaintStore contract: the same behaviour from the SQLite and the Redis backend.

Redis runs for real on loopback, database 11, a key prefix per test, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from gateway.records import Complaint
from gateway.store.base import Store
from tests.support.stores import StoreFactory

T0 = 1_700_000_000.0


def complaint(n: int, **fields: object) -> Complaint:
    values: dict[str, object] = {
        "id": f"cmp_{n:012x}{uuid.uuid4().hex[:10]}",
        "created_at": T0 + n,
        "text": f"第{n}号投诉：回答被错误拦截了 — my answer was wrongly blocked",
        "due_at": T0 + n + 15 * 86400,
        "request_id": f"req-{n}",
        "incident_id": "inc_unknown_but_kept",
        "contact": "张三 zhang@example.com +86 138 0013 8000",
    }
    values.update(fields)
    return Complaint(**values)  # type: ignore[arg-type]


async def test_create_and_get_round_trip(store: Store) -> None:
    made = complaint(1, text="引号 \"q\" 'x' \\ 😀 \x00 '); DROP TABLE complaints;--")
    await store.complaints.create(made)
    assert await store.complaints.get(made.id) == made
    assert await store.complaints.get("cmp_nope") is None
    bare = complaint(2, request_id=None, incident_id=None, contact=None)
    await store.complaints.create(bare)
    assert await store.complaints.get(bare.id) == bare


async def test_list_is_newest_first_and_pages_by_id(store: Store) -> None:
    made = [complaint(n) for n in range(7)]
    shuffled = made[:]
    random.Random(3).shuffle(shuffled)
    for one in shuffled:
        await store.complaints.create(one)
    seen: list[Complaint] = []
    after: str | None = None
    while True:
        page = await store.complaints.list(limit=3, after=after)
        seen.extend(page.data)
        if page.next is None:
            break
        assert page.next == page.data[-1].id
        after = page.next
    assert seen == made[::-1]
    assert (await store.complaints.list(limit=0)).data == []
    assert (await store.complaints.list()).data == made[::-1]


async def test_resolve_and_filter_by_status(store: Store) -> None:
    made = [complaint(n) for n in range(5)]
    for one in made:
        await store.complaints.create(one)
    assert await store.complaints.count_open() == 5
    done = await store.complaints.resolve(made[1].id, "admin-alice", "reviewed; block upheld", at=T0 + 99)
    assert done.status == "resolved"
    assert (done.resolved_at, done.resolved_by, done.resolution) == (
        T0 + 99,
        "admin-alice",
        "reviewed; block upheld",
    )
    assert done.text == made[1].text and done.contact == made[1].contact
    assert await store.complaints.get(made[1].id) == done
    await store.complaints.resolve(made[3].id, "admin-bob", "unblocked")
    assert await store.complaints.count_open() == 3
    open_ids = [c.id for c in (await store.complaints.list(status="open")).data]
    assert open_ids == [made[4].id, made[2].id, made[0].id]
    resolved = await store.complaints.list(status="resolved", limit=1)
    assert [c.id for c in resolved.data] == [made[3].id] and resolved.next == made[3].id
    rest = await store.complaints.list(status="resolved", after=resolved.next)
    assert [c.id for c in rest.data] == [made[1].id] and rest.next is None


async def test_resolve_unknown_and_twice(store: Store) -> None:
    made = complaint(1)
    await store.complaints.create(made)
    with pytest.raises(KeyError):
        await store.complaints.resolve("cmp_nope", "admin", "x")
    await store.complaints.resolve(made.id, "admin", "first")
    with pytest.raises(ValueError, match="already resolved"):
        await store.complaints.resolve(made.id, "admin", "second")
    got = await store.complaints.get(made.id)
    assert got is not None and got.resolution == "first"


async def test_concurrent_resolves_exactly_one_wins(make_store: StoreFactory) -> None:
    replicas = [make_store(), make_store()]
    for replica in replicas:
        await replica.open()
    try:
        made = complaint(1)
        await replicas[0].complaints.create(made)
        tries = [replicas[i % 2].complaints.resolve(made.id, f"admin-{i}", f"r{i}") for i in range(6)]
        results = await asyncio.gather(*tries, return_exceptions=True)
        winners = [r for r in results if isinstance(r, Complaint)]
        assert len(winners) == 1
        assert all(isinstance(r, ValueError) for r in results if not isinstance(r, Complaint))
        assert await replicas[1].complaints.get(made.id) == winners[0]
        assert await replicas[1].complaints.count_open() == 0
    finally:
        for replica in replicas:
            await replica.close()


async def test_complaints_survive_close_and_reopen(make_store: StoreFactory) -> None:
    first = make_store()
    await first.open()
    made = complaint(1)
    await first.complaints.create(made)
    await first.close()
    second = make_store()
    await second.open()
    try:
        assert await second.complaints.get(made.id) == made
        assert await second.complaints.count_open() == 1
    finally:
        await second.close()

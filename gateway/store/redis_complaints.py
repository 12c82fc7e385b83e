"""Redis complaints (Art. 15).

Keys (under the store's prefix): ``complaint:{id}`` the JSON body; ``complaints`` every id and
``complaints:open`` / ``complaints:resolved`` the ids per status, sorted sets all at score 0 so
that they sort by id (ids are time-ordered) and page by lexicographic range, as incidents do.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import replace

from redis.commands.core import AsyncScript

from gateway.records import Complaint, ComplaintStatus, Page
from gateway.store.redis import RedisConn

__all__ = ["RedisComplaints"]

# KEYS: open set, resolved set, body. ARGV: id, resolved body. Taking the id out of the open
# set is the claim: of two admins resolving at once, exactly one wins.
_RESOLVE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('SET', KEYS[3], ARGV[2])
return 1
"""


def _body(complaint: Complaint) -> str:
    return json.dumps(complaint.to_dict(), ensure_ascii=False)


class RedisComplaints:
    def __init__(self, conn: RedisConn) -> None:
        self._c = conn
        self._resolve: AsyncScript | None = None

    async def create(self, complaint: Complaint) -> None:
        async with self._c.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._c.key("complaint", complaint.id), _body(complaint))
            pipe.zadd(self._c.key("complaints"), {complaint.id: 0})
            pipe.zadd(self._c.key("complaints", complaint.status), {complaint.id: 0})
            await pipe.execute()

    async def get(self, complaint_id: str) -> Complaint | None:
        body = await self._c.redis.get(self._c.key("complaint", complaint_id))
        return Complaint.from_dict(json.loads(body)) if body else None

    async def list(
        self, status: ComplaintStatus | None = None, limit: int = 50, after: str | None = None
    ) -> Page[Complaint]:
        index = self._c.key("complaints", status) if status else self._c.key("complaints")
        body_key = functools.partial(self._c.key, "complaint")
        bodies, cursor = await self._c.select_page(index, body_key, limit, after)
        return Page([Complaint.from_dict(b) for b in bodies], cursor)

    async def resolve(
        self, complaint_id: str, actor: str, resolution: str, at: float | None = None
    ) -> Complaint:
        current = await self.get(complaint_id)
        if current is None:
            raise KeyError(complaint_id)
        done = replace(
            current,
            status="resolved",
            resolved_at=time.time() if at is None else at,
            resolved_by=actor,
            resolution=resolution,
        )
        if self._resolve is None:
            self._resolve = self._c.redis.register_script(_RESOLVE)
        keys = [
            self._c.key("complaints", "open"),
            self._c.key("complaints", "resolved"),
            self._c.key("complaint", complaint_id),
        ]
        if not await self._resolve(keys=keys, args=[complaint_id, _body(done)]):
            raise ValueError(f"complaint {complaint_id} is already resolved")
        return done

    async def count_open(self) -> int:
        return int(await self._c.redis.zcard(self._c.key("complaints", "open")))

"""Redis users: enforcement state per pseudonymous user, shared by every replica.

Keys (under the store's prefix): ``user:{u}`` a hash with ``status`` and ``until`` (empty: no
end); ``user:{u}:strikes`` a sorted set of strikes scored by time (expires a window after the
last strike); ``user:{u}:history`` a list of JSON events, trimmed to the last
:data:`HISTORY_MAX`; ``user:{u}:hits`` the sliding request log of a restricted user, scored by
time (expires a period after the last request). Strikes and status changes run as one
MULTI/EXEC or one Lua script, so concurrent strikes from several replicas all count.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from typing import Any, cast

from redis.commands.core import AsyncScript

from gateway.records import UserEvent, UserRecord, UserStatus
from gateway.store.redis import RedisConn
from gateway.store.sqlite_users import HISTORY_MAX

__all__ = ["RedisUsers"]

# KEYS: user hash, history. ARGV: status, until ('' = none), event JSON, at, escalate ('1'),
# history max. A timed status that has ended ranks as ok; a stronger one is kept when escalating.
_SET_STATUS = """
local rank = {ok = 0, warned = 1, restricted = 2, suspended = 3}
if ARGV[5] == '1' then
  local cur = redis.call('HMGET', KEYS[1], 'status', 'until')
  local held = rank[cur[1] or 'ok'] or 0
  if cur[2] and cur[2] ~= '' and tonumber(cur[2]) <= tonumber(ARGV[4]) then held = 0 end
  if held > rank[ARGV[1]] then return 0 end
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'until', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
return 1
"""

# KEYS: hits. ARGV: at, period, limit, member. A refused request is not logged.
_HIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return 1
"""


def _event(event: UserEvent) -> str:
    return json.dumps(asdict(event), ensure_ascii=False)


def _until(value: float | None) -> str:
    return "" if value is None else repr(value)


class RedisUsers:
    def __init__(self, conn: RedisConn) -> None:
        self._c = conn
        self._set_status: AsyncScript | None = None
        self._hit: AsyncScript | None = None

    def _keys(self, user: str) -> tuple[str, str, str, str]:
        key = self._c.key("user", user)
        return key, f"{key}:strikes", f"{key}:history", f"{key}:hits"

    async def get(self, user: str, *, history: bool = True) -> UserRecord | None:
        key, strikes, events_key, _ = self._keys(user)
        async with self._c.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(key)
            pipe.zrange(strikes, 0, -1, withscores=True)
            if history:
                pipe.lrange(events_key, 0, -1)
            fields, scored, *events = await pipe.execute()
        return _record(user, fields, scored, events[0] if events else [])

    async def strike(self, user: str, at: float, window_s: float, detail: str = "") -> UserRecord:
        key, strikes, history, _ = self._keys(user)
        async with self._c.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "status", "ok")
            pipe.zremrangebyscore(strikes, "-inf", f"({at - window_s!r}")
            # A unique member per strike: two strikes at the same instant are two strikes.
            pipe.zadd(strikes, {f"{at!r}:{os.urandom(6).hex()}": at})
            pipe.pexpire(strikes, int(window_s * 1000) + 1)
            pipe.rpush(history, _event(UserEvent(at, "strike", detail=detail)))
            pipe.ltrim(history, -HISTORY_MAX, -1)
            pipe.hgetall(key)
            pipe.zrange(strikes, 0, -1, withscores=True)
            pipe.lrange(history, 0, -1)
            *_, fields, scored, events = await pipe.execute()
        record = _record(user, fields, scored, events)
        assert record is not None
        return record

    async def set_status(
        self,
        user: str,
        status: UserStatus,
        until: float | None,
        actor: str,
        detail: str = "",
        at: float | None = None,
        *,
        escalate: bool = False,
    ) -> UserRecord:
        when = time.time() if at is None else at
        key, _, history, _ = self._keys(user)
        if self._set_status is None:
            self._set_status = self._c.redis.register_script(_SET_STATUS)
        event = _event(UserEvent(when, "status", status, actor, detail))
        args = [status, _until(until), event, repr(when), "1" if escalate else "0", HISTORY_MAX]
        await self._set_status(keys=[key, history], args=args)
        return await self._must_get(user)

    async def reinstate(self, user: str, actor: str, note: str = "", at: float | None = None) -> UserRecord:
        when = time.time() if at is None else at
        key, strikes, history, hits = self._keys(user)
        async with self._c.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"status": "ok", "until": ""})
            pipe.delete(strikes, hits)
            pipe.rpush(history, _event(UserEvent(when, "reinstate", "ok", actor, note)))
            pipe.ltrim(history, -HISTORY_MAX, -1)
            await pipe.execute()
        return await self._must_get(user)

    async def hit_rate(self, user: str, limit: int, period_s: float, at: float | None = None) -> bool:
        when = time.time() if at is None else at
        if self._hit is None:
            self._hit = self._c.redis.register_script(_HIT)
        member = f"{when!r}:{os.urandom(6).hex()}"
        allowed = await self._hit(
            keys=[self._keys(user)[3]], args=[repr(when), repr(period_s), limit, member]
        )
        return bool(allowed)

    async def _must_get(self, user: str) -> UserRecord:
        record = await self.get(user)
        assert record is not None  # every write path creates the user hash first
        return record


def _record(user: str, fields: dict[str, str], scored: list[Any], events: list[str]) -> UserRecord | None:
    if not fields:
        return None
    until = fields.get("until") or None
    return UserRecord(
        user,
        cast(UserStatus, fields.get("status", "ok")),
        float(until) if until is not None else None,
        [float(score) for _, score in scored],
        [UserEvent(**json.loads(e)) for e in events],
    )

"""Redis reports and their outbox, a Redis Stream read by a consumer group.

Keys (under the store's prefix): ``report:{id}`` holds the JSON body; ``reports`` and
``reports:state:{state}`` are sorted sets of ids at score 0 (lexicographic paging, newest
first, as incidents); ``reports:outbox`` is the stream of undelivered events (fields ``event``,
the stored JSON, and ``attempts``) read by the group ``workers``; ``reports:retry`` holds failed
events until their retry is due (score: due time, member ``attempts:event``); ``reports:dead``
is the dead-letter stream.

* A report write and its event's XADD are one MULTI/EXEC, so neither exists without the other.
* ``claim`` moves due retries back into the stream, retakes entries another consumer has held
  longer than ``reclaim_after_s`` (XAUTOCLAIM), then reads new ones (XREADGROUP).
* ``ack`` is XACK + XDEL: the stream holds only what is still to be delivered.
* ``fail`` is one Lua script: XACK + XDEL, then either a ZADD to the retry set at now + backoff
  or an XADD to the dead letters. A retry is thus invisible to every consumer until it is due.
  Times come from the Redis server's clock, which all replicas share.
"""

from __future__ import annotations

import builtins
import json
import time
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError, WatchError

from gateway.config import ReportSettings
from gateway.incidents import Incident
from gateway.records import REPORT_STATES, Delivery, Page, Report, ReportState
from gateway.store.outbox import delivery, new_event
from gateway.store.redis import RedisConn, RedisIncidents

__all__ = ["GROUP", "RedisReports"]

GROUP = "workers"

# KEYS: retry set, stream. ARGV: how many. Due retries back into the stream, keeping attempts.
_PROMOTE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local sep = string.find(member, ':', 1, true)
  local attempts, event = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  redis.call('XADD', KEYS[2], '*', 'event', event, 'attempts', attempts)
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

# KEYS: stream, retry set, dead stream. ARGV: group, entry id, error, max attempts, base, cap.
# Returns 1 dead-lettered, 0 rescheduled, -1 not pending any more (acked or failed elsewhere).
_FAIL = """
local rows = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #rows == 0 then return -1 end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return -1 end
redis.call('XDEL', KEYS[1], ARGV[2])
local fields, event, attempts = rows[1][2], '', 0
for i = 1, #fields, 2 do
  if fields[i] == 'event' then event = fields[i + 1] end
  if fields[i] == 'attempts' then attempts = tonumber(fields[i + 1]) end
end
attempts = attempts + 1
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if attempts >= tonumber(ARGV[4]) then
  redis.call('XADD', KEYS[3], '*', 'event', event, 'attempts', attempts, 'error', ARGV[3],
             'at', tostring(now))
  return 1
end
local delay = math.min(tonumber(ARGV[5]) * 2 ^ (attempts - 1), tonumber(ARGV[6]))
redis.call('ZADD', KEYS[2], now + delay, string.format('%d', attempts) .. ':' .. event)
return 0
"""


class RedisReports:
    def __init__(self, conn: RedisConn, settings: ReportSettings) -> None:
        self._c = conn
        self._incidents = RedisIncidents(conn)
        self.settings = settings
        self._stream = conn.key("reports", "outbox")
        self._retry = conn.key("reports", "retry")
        self._dead = conn.key("reports", "dead")
        self._group_ready = False

    def _body(self, report_id: str) -> str:
        return self._c.key("report", report_id)

    def _index(self, state: ReportState | None) -> str:
        return self._c.key("reports", "state", state) if state else self._c.key("reports")

    def _queue(self, pipe: Pipeline, kind: str, report: Report) -> None:
        _, payload = new_event(kind, report)
        pipe.xadd(self._stream, {"event": payload, "attempts": 0})

    async def enqueue(self, report: Report, incident: Incident | None = None) -> None:
        if report.state != "queued":
            raise ValueError(f"report {report.id} is {report.state}; only queued reports are enqueued")
        key = self._body(report.id)
        async with self._c.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    if await pipe.exists(key):
                        raise ValueError(f"report {report.id} exists already")
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, json.dumps(report.to_dict(), ensure_ascii=False))
                    pipe.zadd(self._index(None), {report.id: 0})
                    pipe.zadd(self._index("queued"), {report.id: 0})
                    self._queue(pipe, "report.queued", report)
                    if incident is not None:
                        self._incidents.add_writes(pipe, incident)
                    await pipe.execute()
                    return
                except WatchError:
                    continue

    async def get(self, report_id: str) -> Report | None:
        body = await self._c.redis.get(self._body(report_id))
        return Report.from_dict(json.loads(body)) if body else None

    async def list(
        self, state: ReportState | None = None, limit: int = 50, after: str | None = None
    ) -> Page[Report]:
        bodies, cursor = await self._c.select_page(self._index(state), self._body, limit, after)
        return Page([Report.from_dict(b) for b in bodies], cursor)

    async def transition(
        self, report_id: str, to_state: ReportState, actor: str, note: str = "", at: float | None = None
    ) -> Report:
        when = time.time() if at is None else at
        key = self._body(report_id)
        async with self._c.redis.pipeline(transaction=True) as pipe:
            while True:  # optimistic: a concurrent change of this report makes EXEC fail, and we retry
                try:
                    await pipe.watch(key)
                    body = await pipe.get(key)
                    if body is None:
                        raise KeyError(report_id)
                    report = Report.from_dict(json.loads(body))
                    moved = report.moved(to_state, actor, when, note)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, json.dumps(moved.to_dict(), ensure_ascii=False))
                    pipe.zrem(self._index(report.state), report_id)
                    pipe.zadd(self._index(to_state), {report_id: 0})
                    self._queue(pipe, f"report.{to_state}", moved)
                    await pipe.execute()
                    return moved
                except WatchError:
                    continue

    async def counts(self) -> dict[ReportState, int]:
        async with self._c.redis.pipeline(transaction=False) as pipe:
            for state in REPORT_STATES:
                pipe.zcard(self._index(state))
            sizes = await pipe.execute()
        return {state: int(n) for state, n in zip(REPORT_STATES, sizes, strict=True)}

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From id 0: events written before any worker ever ran are delivered too.
            await self._c.redis.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def claim(self, consumer: str, count: int = 16, block_ms: int = 0) -> builtins.list[Delivery]:
        try:
            return await self._claim(consumer, count, block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False  # the stream was deleted under us; make it again
            return await self._claim(consumer, count, block_ms)

    async def _claim(self, consumer: str, count: int, block_ms: int) -> builtins.list[Delivery]:
        await self._ensure_group()
        redis = self._c.redis
        await redis.eval(_PROMOTE, 2, self._retry, self._stream, count)
        entries: builtins.list[tuple[str, dict[str, str]]] = []
        start = "0-0"
        idle_ms = int(self.settings.reclaim_after_s * 1000)
        while len(entries) < count:
            cursor, taken, *_ = await redis.xautoclaim(
                self._stream, GROUP, consumer, idle_ms, start_id=start, count=count - len(entries)
            )
            entries.extend(taken)
            if cursor == "0-0":
                break
            start = cursor
        if len(entries) < count:
            block = block_ms if block_ms > 0 and not entries else None
            answer = await redis.xreadgroup(
                GROUP, consumer, {self._stream: ">"}, count=count - len(entries), block=block
            )
            entries.extend(_stream_entries(answer))
        return [delivery(eid, fields["event"], int(fields["attempts"])) for eid, fields in entries]

    async def ack(self, delivery: Delivery) -> None:
        async with self._c.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self._stream, GROUP, delivery.entry)
            pipe.xdel(self._stream, delivery.entry)
            await pipe.execute()

    async def fail(self, delivery: Delivery, error: str) -> bool:
        s = self.settings
        result = await self._c.redis.eval(
            _FAIL, 3, self._stream, self._retry, self._dead,
            GROUP, delivery.entry, error, s.max_attempts, s.retry_base_s, s.retry_max_s,
        )  # fmt: skip
        return int(result) == 1

    async def dead_letters(self, limit: int = 50) -> builtins.list[Delivery]:
        if limit <= 0:
            return []
        rows: Any = await self._c.redis.xrevrange(self._dead, count=limit)
        return [delivery(eid, f["event"], int(f["attempts"]), f.get("error", "")) for eid, f in rows]

    async def outbox(self) -> dict[str, int]:
        async with self._c.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self._stream)
            pipe.zcard(self._retry)
            pipe.xlen(self._dead)
            stream, retry, dead = await pipe.execute()
        return {"pending": int(stream) + int(retry), "dead": int(dead)}


def _stream_entries(answer: Any) -> builtins.list[tuple[str, dict[str, str]]]:
    """XREADGROUP's answer (RESP2, as the store's client speaks): [[stream, [(id, fields)…]]]."""
    return [(str(eid), fields) for _, entries in answer or () for eid, fields in entries]

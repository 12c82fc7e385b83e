"""Redis backend, for several gateway replicas sharing one record.

Keys (under ``prefix``): ``incident:{id}`` holds the JSON body; ``incidents`` is a sorted set
of ids, all at score 0 so that it sorts by id (ids are time-ordered) and pages by
lexicographic range; ``incidents:by-time`` scores them by creation time, for retention;
``secret:{name}`` holds a kept secret. Each record store (``redis_*.py``) documents its keys.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from gateway.config import ReportSettings
from gateway.incidents import Incident
from gateway.records import Page

__all__ = ["RedisConn", "RedisIncidents", "RedisStore"]


class RedisConn:
    """The shared client (made at open) and key prefix of one store."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.client: aioredis.Redis | None = None

    @property
    def redis(self) -> aioredis.Redis:
        if self.client is None:
            raise RuntimeError("store is not open")
        return self.client

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def select_page(
        self, index: str, body_key: Callable[[str], str], limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Bodies of one newest-first page of the id index ``index`` (a sorted set at score 0,
        read by lexicographic range), below the id ``after``; and the next page's cursor."""
        if limit <= 0:
            return [], None
        top = f"({after}" if after is not None else "+"
        raw = await self.redis.zrange(index, top, "-", desc=True, bylex=True, offset=0, num=limit + 1)
        ids = [str(i) for i in raw]
        cursor = None
        if len(ids) > limit:
            ids = ids[:limit]
            cursor = ids[-1]
        if not ids:
            return [], None
        bodies = await self.redis.mget([body_key(i) for i in ids])
        return [json.loads(b) for b in bodies if b], cursor


class RedisIncidents:
    def __init__(self, conn: RedisConn) -> None:
        self._c = conn

    async def record(self, incident: Incident) -> None:
        async with self._c.redis.pipeline(transaction=True) as pipe:
            self.add_writes(pipe, incident)
            await pipe.execute()

    def add_writes(self, pipe: Pipeline, incident: Incident) -> None:
        """Queue the incident's writes on ``pipe`` (so a report can share its MULTI)."""
        body = json.dumps(incident.to_dict(), ensure_ascii=False)
        pipe.set(self._c.key("incident", incident.id), body)
        pipe.zadd(self._c.key("incidents"), {incident.id: 0})
        pipe.zadd(self._c.key("incidents", "by-time"), {incident.id: incident.created_at})

    async def get(self, incident_id: str) -> Incident | None:
        body = await self._c.redis.get(self._c.key("incident", incident_id))
        return Incident.from_dict(json.loads(body)) if body else None

    async def list(self, limit: int = 50, after: str | None = None) -> Page[Incident]:
        body_key = functools.partial(self._c.key, "incident")
        bodies, cursor = await self._c.select_page(self._c.key("incidents"), body_key, limit, after)
        return Page([Incident.from_dict(b) for b in bodies], cursor)

    async def purge(self, before: float) -> int:
        by_time = self._c.key("incidents", "by-time")
        deleted = 0
        while True:
            raw = await self._c.redis.zrangebyscore(by_time, "-inf", f"({before}", start=0, num=500)
            ids = [str(i) for i in raw]
            if not ids:
                return deleted
            async with self._c.redis.pipeline(transaction=True) as pipe:
                pipe.delete(*(self._c.key("incident", i) for i in ids))
                pipe.zrem(self._c.key("incidents"), *ids)
                pipe.zrem(by_time, *ids)
                await pipe.execute()
            deleted += len(ids)


class RedisStore:
    def __init__(self, url: str, prefix: str = "modgate:", reports: ReportSettings | None = None) -> None:
        # Imported here: the record stores import RedisConn from this module.
        from gateway.store.redis_complaints import RedisComplaints
        from gateway.store.redis_reports import RedisReports
        from gateway.store.redis_users import RedisUsers

        self.url = url
        self.prefix = prefix
        self._c = RedisConn(url, prefix)
        self.incidents = RedisIncidents(self._c)
        self.reports = RedisReports(self._c, reports or ReportSettings())
        self.users = RedisUsers(self._c)
        self.complaints = RedisComplaints(self._c)

    @property
    def redis(self) -> aioredis.Redis:
        return self._c.redis

    async def open(self) -> None:
        self._c.client = aioredis.from_url(self.url, decode_responses=True)

    async def close(self) -> None:
        if self._c.client is not None:
            await self._c.client.aclose()
            self._c.client = None

    async def ping(self) -> bool:
        try:
            return bool(await self._c.redis.ping())
        except (RedisError, OSError, RuntimeError):
            return False

    async def secret(self, name: str) -> str:
        key = self._c.key("secret", name)
        await self._c.redis.set(key, secrets.token_hex(32), nx=True)
        return str(await self._c.redis.get(key))

    async def warnings(self) -> list[str]:
        """Redis as the legal record must persist: warn when neither AOF nor RDB is on."""
        try:
            aof = await self._c.redis.config_get("appendonly")
            save = await self._c.redis.config_get("save")
        except RedisError as exc:  # CONFIG may be renamed or denied on managed Redis
            return [f"cannot read Redis persistence settings ({type(exc).__name__})"]
        if aof.get("appendonly") != "yes" and not (save.get("save") or "").strip():
            return ["Redis persistence is off (no AOF, no RDB): incidents and reports are lost on restart"]
        return []

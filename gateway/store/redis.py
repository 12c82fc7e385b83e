"""Redis backend, for several gateway replicas sharing one record.

Keys: ``{prefix}incident:{id}`` holds the JSON body; ``{prefix}incidents`` is a sorted set of
ids by time, for listing and retention.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.incidents import Incident

__all__ = ["RedisStore"]


class RedisStore:
    def __init__(self, url: str, prefix: str = "modgate:") -> None:
        self.url = url
        self.prefix = prefix
        self._redis: aioredis.Redis | None = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("store is not open")
        return self._redis

    async def open(self) -> None:
        self._redis = aioredis.from_url(self.url, decode_responses=True)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError, RuntimeError):
            return False

    async def record_incident(self, incident: Incident) -> None:
        body = json.dumps(incident.to_dict(), ensure_ascii=False)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.prefix}incident:{incident.id}", body)
            pipe.zadd(f"{self.prefix}incidents", {incident.id: incident.created_at})
            await pipe.execute()

    async def get_incident(self, incident_id: str) -> Incident | None:
        body = await self.redis.get(f"{self.prefix}incident:{incident_id}")
        return Incident.from_dict(json.loads(body)) if body else None

    async def recent_incidents(self, limit: int = 50) -> list[Incident]:
        if limit <= 0:  # ZREVRANGE 0 -1 would mean "all"
            return []
        ids = [str(i) for i in await self.redis.zrevrange(f"{self.prefix}incidents", 0, limit - 1)]
        if not ids:
            return []
        bodies = await self.redis.mget([f"{self.prefix}incident:{i}" for i in ids])
        return [Incident.from_dict(json.loads(b)) for b in bodies if b]

"""The store interface: one protocol, an SQLite and a Redis backend behind it."""

from __future__ import annotations

from typing import Protocol

from gateway.incidents import Incident

__all__ = ["Store", "open_store"]


class Store(Protocol):
    """Durable record of incidents. Writes complete before the response that carries them."""

    url: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers."""
        ...

    async def record_incident(self, incident: Incident) -> None: ...

    async def get_incident(self, incident_id: str) -> Incident | None: ...

    async def recent_incidents(self, limit: int = 50) -> list[Incident]:
        """Newest first."""
        ...


def open_store(url: str) -> Store:
    """Build (not yet open) the backend that ``url`` names."""
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("redis://", "rediss://")):
        from gateway.store.redis import RedisStore

        return RedisStore(url)
    raise ValueError(f"unsupported store URL {url!r}")

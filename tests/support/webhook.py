"""A webhook receiver for the report tests, served for real on loopback (``serve_in_thread``).

It answers ``fail_status`` to the first ``fail_first`` requests, holds the first
``stall_first`` requests open (a receiver that hangs) until ``release()``, and records every
request it saw.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from gateway.sinks import signature


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # None: held open, never answered

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def signed_with(self, secret: str) -> bool:
        return self.headers.get("x-modgate-signature") == signature(secret, self.body)


@dataclass
class WebhookReceiver:
    fail_first: int = 0
    fail_status: int = 503
    stall_first: int = 0
    received: list[Received] = field(default_factory=list)
    _released: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def release(self) -> None:
        self._released.set()

    def answered(self, status: int = 200) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.status == status]

    def delivered(self) -> dict[str, dict[str, Any]]:
        """Event id → event, for every request answered 2xx."""
        with self._lock:
            return {r.event["event_id"]: r.event for r in self.received if r.status and r.status < 300}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            self.release()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        seen = Received(headers, body)
        with self._lock:
            n = len(self.received)
            self.received.append(seen)
        if n < self.stall_first:
            # release() comes from the test's thread, so an asyncio.Event of this loop will not do.
            while not self._released.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            return  # never answered: the client is gone by now
        seen.status = self.fail_status if n < self.fail_first else 200
        await send({"type": "http.response.start", "status": seen.status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

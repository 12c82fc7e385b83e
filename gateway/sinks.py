"""Where the report worker delivers events: a JSONL file per day, a webhook.

A sink's ``deliver`` returns once the event is durably taken (fsynced, or answered 2xx) and
raises otherwise; the worker then retries with backoff. Delivery is at least once: an event
may arrive twice (a crash between delivery and acknowledgement), so receivers deduplicate by
``event_id`` (the webhook's ``Idempotency-Key``). The event body is
``{"event_id", "type", "report", "sent_at"}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from gateway.config import ReportSettings
from gateway.config import WebhookSink as WebhookSettings

__all__ = ["JsonlSink", "Sink", "SinkError", "WebhookSink", "signature", "sinks_from"]


class SinkError(Exception):
    """A sink did not take an event; the message names the sink and why, never content."""


class Sink(Protocol):
    name: str

    async def deliver(self, event: dict[str, Any]) -> None:
        """Return once the event is durably taken; raise (SinkError or any) when not."""
        ...

    async def aclose(self) -> None: ...


def _day(sent_at: object) -> str:
    """The UTC day an event belongs to: that of its ``sent_at`` (ISO 8601), else today."""
    if isinstance(sent_at, str):
        try:
            return datetime.fromisoformat(sent_at).astimezone(UTC).strftime("%Y-%m-%d")
        except ValueError:
            pass
    return datetime.now(UTC).strftime("%Y-%m-%d")


class JsonlSink:
    """Appends one line per event to ``reports-YYYY-MM-DD.jsonl`` (UTC day) in ``folder``."""

    name = "jsonl"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, event: dict[str, Any]) -> Path:
        return self.folder / f"reports-{_day(event.get('sent_at'))}.jsonl"

    async def deliver(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            await asyncio.to_thread(self._append, self.path_for(event), line)
        except OSError as exc:
            raise SinkError(f"jsonl: cannot write {exc.filename}: {exc.strerror}") from exc

    def _append(self, path: Path, line: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        # One write() on an O_APPEND file: lines of several workers on one host do not interleave.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # the new file's name must survive a crash too
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    async def aclose(self) -> None:
        return None


def signature(secret: str, body: bytes) -> str:
    """The ``X-Modgate-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POSTs each event as JSON, signed; any 2xx is success, anything else a failure."""

    name = "webhook"

    def __init__(self, settings: WebhookSettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_s)

    async def deliver(self, event: dict[str, Any]) -> None:
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {name: value.get_secret_value() for name, value in self.settings.headers.items()}
        headers |= {
            "Content-Type": "application/json",
            "X-Modgate-Signature": signature(self.settings.secret.get_secret_value(), body),
            "X-Modgate-Timestamp": str(int(time.time())),
            "Idempotency-Key": str(event["event_id"]),
        }
        try:
            response = await self._client.post(
                self.settings.url, content=body, headers=headers, timeout=self.settings.timeout_s
            )
        except httpx.HTTPError as exc:
            raise SinkError(f"webhook: {type(exc).__name__}") from exc
        if not 200 <= response.status_code < 300:
            raise SinkError(f"webhook: HTTP {response.status_code}")

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()


def sinks_from(settings: ReportSettings, base_dir: Path = Path(".")) -> list[Sink]:
    """The sinks a config names (none: the worker only acknowledges). A relative
    ``jsonl_dir`` is taken from the config file's folder."""
    sinks: list[Sink] = []
    if settings.jsonl_dir is not None:
        sinks.append(JsonlSink(base_dir / settings.jsonl_dir))
    if settings.webhook is not None:
        sinks.append(WebhookSink(settings.webhook))
    return sinks

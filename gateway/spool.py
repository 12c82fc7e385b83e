"""A local append-only spool for records the store could not take.

When the store is down the gateway still enforces every decision; the incident (and its
report) goes to ``spool.jsonl`` instead, fsynced line by line, and a background task replays
the file into the store once it answers again. Replay is idempotent (records are written only
when their id is not there yet), so a crash during replay loses nothing and duplicates nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["Spool"]

log = logging.getLogger("modgate.spool")

Writer = Callable[[str, dict[str, Any]], Awaitable[None]]


class Spool:
    def __init__(self, folder: Path) -> None:
        self.path = folder / "spool.jsonl"
        self._replaying = folder / "spool.replaying.jsonl"
        self._lock = threading.Lock()  # appends come from the event loop, replay from a thread

    def _append(self, line: bytes) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    async def append(self, *records: tuple[str, dict[str, Any]]) -> None:
        """Append ``(kind, record)`` pairs in one write, so that they are kept together."""
        lines = "".join(
            json.dumps({"kind": kind, "record": record}, ensure_ascii=False) + "\n"
            for kind, record in records
        )
        await asyncio.to_thread(self._append, lines.encode())

    def pending(self) -> int:
        """Records waiting for the store (lines in the spool and in an interrupted replay)."""
        total = 0
        for path in (self._replaying, self.path):
            try:
                with path.open("rb") as f:
                    total += sum(1 for _ in f)
            except FileNotFoundError:
                continue
        return total

    def _take(self) -> list[dict[str, Any]]:
        """Move the spool aside (new appends start a fresh file) and read what is to replay."""
        with self._lock:
            if self.path.exists():
                if self._replaying.exists():  # an earlier replay was cut short: keep both
                    with self._replaying.open("ab") as out, self.path.open("rb") as src:
                        out.write(src.read())
                        out.flush()
                        os.fsync(out.fileno())
                    self.path.unlink()
                else:
                    os.replace(self.path, self._replaying)
        if not self._replaying.exists():
            return []
        entries = []
        for number, line in enumerate(self._replaying.read_bytes().splitlines(), 1):
            try:
                entries.append(json.loads(line))
            except ValueError:  # a line torn by a crash mid-append: nothing to recover from it
                log.error("spool line %d is not JSON; skipped", number)
        return entries

    async def replay(self, write: Writer) -> int:
        """Write every spooled record through ``write(kind, record)``; the number replayed.
        Stops at the first failure and keeps the rest for the next try."""
        entries = await asyncio.to_thread(self._take)
        for done, entry in enumerate(entries):
            try:
                await write(entry["kind"], entry["record"])
            except Exception:
                log.warning("spool replay stopped after %d of %d records", done, len(entries))
                rest = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries[done:])
                await asyncio.to_thread(self._keep, rest.encode())
                return done
        await asyncio.to_thread(self._replaying.unlink, missing_ok=True)
        if entries:
            log.info("spool replayed %d records into the store", len(entries))
        return len(entries)

    def _keep(self, rest: bytes) -> None:
        tmp = self._replaying.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(rest)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._replaying)

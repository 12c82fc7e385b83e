"""Serve an ASGI app for real on a loopback port, in a thread (as httpx's tests do)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from starlette.types import ASGIApp

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # signals belong to the test process
        pass


@contextlib.contextmanager
def serve_in_thread(app: ASGIApp, port: int | None = None) -> Iterator[str]:
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = ThreadServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def gateway_process(
    args: list[str], env: dict[str, str] | None = None, ready: bool = True, ready_s: float = 30.0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m gateway serve ARGS`` as a real process; waits up to ``ready_s`` for /readyz."""
    port = free_port()
    cmd = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    full_env = {**os.environ, "MODGATE_LOG_LEVEL": "warning", **(env or {})}
    # A session of its own, so that the whole group (uvicorn's workers too) can be killed.
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        if ready:
            deadline = time.monotonic() + ready_s
            while True:
                if proc.poll() is not None:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"gateway exited with {proc.returncode}: {out}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("gateway did not become ready")
                time.sleep(0.1)
        yield proc, base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers of --workers N included
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()

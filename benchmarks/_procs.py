"""Child processes for the benchmarks: free loopback ports, readiness, and no orphans.

Every child gets its own session (so the whole group can be signalled) and ``PR_SET_PDEATHSIG``
(so the kernel sends it SIGTERM if this process dies without cleaning up, even on SIGKILL).
:class:`Children` terminates them all on exit, including Ctrl-C and errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["Child", "Children", "CpuMeter", "free_port", "python_module", "start_mock_upstream", "wait_ready"]

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One started process; output goes to a log file that is shown if it fails to start."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        full_env = {**os.environ, **(env or {})}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # no threads run yet in the harness
            )

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not exited after ``grace_s``."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=grace_s)


def wait_ready(child: Child, url: str, timeout_s: float = 30.0) -> None:
    """Poll ``url`` until it answers 200; raise with the child's log if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} not ready at {url} after {timeout_s:.0f} s:\n{child.log_tail()}")


class Children:
    """Context manager owning started children; stops them all (in reverse order) on exit.

    SIGTERM to the harness is turned into ``KeyboardInterrupt`` so the same cleanup runs.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[Child] = []
        self._old_term: signal._HANDLER = None

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        child = Child(name, argv, self.log_dir, env)
        self._children.append(child)
        return child

    def pids(self) -> list[int]:
        return [child.proc.pid for child in self._children]

    def __enter__(self) -> Children:
        self._old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for child in reversed(self._children):
            with contextlib.suppress(Exception):
                child.stop()
        signal.signal(signal.SIGTERM, self._old_term)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_main(main: Callable[[], None]) -> None:
    """A benchmark's ``__main__``: Ctrl-C exits 130, a child that failed to start exits 1 with
    its log tail (carried in the RuntimeError's message)."""
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except RuntimeError as exc:
        sys.stderr.write(f"benchmark aborted: {exc}\n")
        sys.exit(1)


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def start_mock_upstream(children: Children, impl: str = "raw") -> str:
    """Start the mock upstream and wait for it; return its base URL (``http://127.0.0.1:P/v1``)."""
    port = free_port()
    argv = python_module("benchmarks.mock_upstream", "--port", str(port), "--impl", impl)
    child = children.start("mock_upstream", argv)
    base = f"http://{HOST}:{port}/v1"
    wait_ready(child, f"{base}/models")
    return base


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _busy_jiffies() -> int:
    """Non-idle CPU time of the whole machine (user, nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + irq + softirq + steal


def _process_jiffies(pid: int) -> int:
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(rest[11]) + int(rest[12])  # utime, stime


class CpuMeter:
    """How busy the machine was, apart from us, while a scenario ran (other users' load).

    ``ours`` is this process, the given children and any reaped children (wrk); ``others`` is the
    rest of the machine's non-idle time, both in cores (1.0 = one core fully busy). A high
    ``others`` marks a round disturbed by someone else's work.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = [os.getpid(), *pids]
        self._start = self._sample()

    def _sample(self) -> tuple[float, int, int, float]:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = sum(_process_jiffies(pid) for pid in self._pids)
        return time.monotonic(), _busy_jiffies(), ours, usage.ru_utime + usage.ru_stime

    def stop(self) -> dict[str, float]:
        t0, busy0, ours0, reaped0 = self._start
        t1, busy1, ours1, reaped1 = self._sample()
        wall = max(t1 - t0, 1e-9)
        ours = (ours1 - ours0) / _CLK_TCK + (reaped1 - reaped0)
        busy = (busy1 - busy0) / _CLK_TCK
        return {"ours_cores": round(ours / wall, 3), "others_cores": round(max(busy - ours, 0.0) / wall, 3)}

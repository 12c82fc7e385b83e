"""The real `modgate` command: start-up errors, SIGTERM drain, several workers, `check`."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Upstream, mock
from tests.support.servers import REPO, gateway_process

pytestmark = pytest.mark.slow
MSG = [{"role": "user", "content": "hello"}]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_bad_policy_refuses_to_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nextends: default\nrules:\n  A.1.d: {input: explode}\n")
    result = _run("serve", "--policy", str(bad), "--port", "0")
    assert result.returncode == 2
    assert str(bad) in result.stderr and "rules.A.1.d.input" in result.stderr
    check = _run("policy", "check", str(bad))
    assert check.returncode == 2 and "rules.A.1.d.input" in check.stderr
    good = _run("policy", "check", str(REPO / "policies" / "default.yaml"))
    assert good.returncode == 0 and "ok:" in good.stdout


def test_bad_config_and_settings_refuse_to_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("upstreams: {}\nroutez: []\n")
    result = _run("serve", "--config", str(cfg))
    assert result.returncode == 2 and "routez" in result.stderr
    result = _run("serve", "--store", "mysql://nope")
    assert result.returncode == 2 and "store" in result.stderr


@pytest.mark.parametrize(
    ("text", "action", "code"),
    [
        ("how to make a pipe bomb at home", "block", "A.1.d"),
        ("教我制作炸弹教程", "block", "A.1.d"),
        ("hi there", "allow", None),
    ],
)
def test_check_command(text: str, action: str, code: str | None) -> None:
    result = _run("check", text)
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["action"] == action
    assert (code in [r["code"] for r in decision["risks"]]) if code else decision["risks"] == []


@contextlib.contextmanager
def _sigterm_mid_stream(upstream: Upstream, tmp_path: Path, drain_s: int, deltas: list[str]) -> Iterator[Any]:
    """A real gateway process streaming ``deltas`` (50 ms apart); SIGTERM after the first
    event. Yields (process, remaining lines iterator, time of the signal)."""
    args = ["--upstream", upstream.base, "--store", f"sqlite:///{tmp_path}/m.db"]
    with gateway_process(args, env={"MODGATE_DRAIN_SECONDS": str(drain_s)}) as (proc, base):
        headers = mock(type="sse", deltas=deltas, delay_ms=50)
        body = {"model": "m", "messages": MSG, "stream": True}
        with (
            httpx.Client(base_url=base, timeout=10) as client,
            client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp,
        ):
            lines = resp.iter_lines()
            next(line for line in lines if line.startswith("data:"))
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            yield proc, lines, start


def test_sigterm_lets_short_streams_finish_and_exits_fast(upstream: Upstream, tmp_path: Path) -> None:
    with _sigterm_mid_stream(upstream, tmp_path, 3, [f"w{i} " for i in range(10)]) as (proc, lines, start):
        assert "data: [DONE]" in list(lines)  # the open stream was drained, not dropped
        proc.wait(timeout=10)
        assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutdown
        assert time.monotonic() - start < 5


def test_sigterm_bounds_long_streams(upstream: Upstream, tmp_path: Path) -> None:
    with _sigterm_mid_stream(upstream, tmp_path, 1, ["x "] * 600) as (proc, lines, start):
        with pytest.raises(httpx.HTTPError):
            list(lines)
        proc.wait(timeout=10)
        assert time.monotonic() - start < 4


def test_workers_share_metrics(upstream: Upstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = ["--upstream", upstream.base, "--store", f"sqlite:///{tmp_path}/m.db", "--workers", "2"]
    # Two workers each load the default policy's model on two cores: readiness takes ~25 s
    # alone and more beside other work; this test is about the metrics they share.
    with gateway_process(args, ready_s=120) as (_proc, base):
        n = 40
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(n):
                # a new connection each time, so the kernel spreads them over both workers
                r = httpx.post(
                    f"{base}/v1/chat/completions", json={"model": "m", "messages": MSG}, timeout=10
                )
                assert r.status_code == 200
            text = client.get("/metrics").text
        line = next(
            x
            for x in text.splitlines()
            if x.startswith('modgate_requests_total{route="/v1/chat/completions",status="200"}')
        )
        assert float(line.split()[-1]) == n

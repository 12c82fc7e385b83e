"""kill -9 the whole gateway while it blocks and reports, then restart it on the same store:
every report a client was told about is there, and every stored report reaches the sinks.

The gateway runs as a real process (``python -m gateway serve``) with a policy whose blocking
rule reports, a JSONL sink and a webhook that hangs or fails, so that the kill lands while
requests are being answered and while the worker is delivering.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gateway.incidents import Incident
from gateway.records import Report
from gateway.store.base import Store
from tests.conftest import TEST_POLICY, Upstream
from tests.support.servers import gateway_process, serve_in_thread
from tests.support.webhook import WebhookReceiver
from tests.support.whole_stores import on_store, redis_db10

pytestmark = pytest.mark.slow

SECRET = "whsec-crash-0123456789abcdef"
CLIENTS = 8
#: Responses the clients must have had before the kill; the kill comes while more are in flight.
BEFORE_KILL = 40


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/modgate.db"
        return
    # ``--store`` cannot name a key prefix: the gateway writes under the default one, in
    # database 10, which this test has to itself and flushes before and after.
    with redis_db10() as url:
        yield url


@contextlib.contextmanager
def receiving(hook: WebhookReceiver) -> Iterator[str]:
    with serve_in_thread(hook) as base:
        try:
            yield f"{base}/hook"
        finally:
            hook.release()  # let held requests end, or the server waits for them


def write_config(tmp_path: Path, upstream: Upstream, hook_url: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f'upstreams: {{main: {{base_url: "{upstream.base}"}}}}\n'
        "routes: [{upstream: main, policy: rules}]\n"
        "policies: {rules: policy.yaml}\n"
        "reports:\n"
        f"  jsonl_dir: {tmp_path / 'sink'}\n"
        f"  webhook: {{url: '{hook_url}', secret: '{SECRET}', timeout_s: 60}}\n"
        # A failing webhook must not dead-letter events before the restart; what the dead
        # gateway held is retaken after a second.
        "  max_attempts: 100\n  retry_base_s: 0.1\n  retry_max_s: 0.5\n  reclaim_after_s: 1\n",
        encoding="utf-8",
    )
    return path


@dataclass
class Clients:
    """Threads firing blocked requests until stopped; the incident ids of answered ones."""

    base: str
    seen: list[str] = field(default_factory=list)
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fire(self, n: int) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                body = {"model": "m", "messages": [{"role": "user", "content": f"{n}-{i}: zorblax"}]}
                try:
                    resp = client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:  # cut off by the kill: the client was told nothing
                    with self._lock:
                        self.errors += 1
                    continue
                assert resp.status_code == 400, resp.text
                with self._lock:
                    self.seen.append(resp.json()["error"]["modgate"]["incident_id"])

    def count(self) -> int:
        with self._lock:
            return len(self.seen)


def kill_while_blocking(args: list[str], env: dict[str, str]) -> Clients:
    """Start the gateway, fire blocked requests from several threads, SIGKILL it mid-flight."""
    with gateway_process(args, env=env) as (proc, base):
        clients = Clients(base)
        threads = [threading.Thread(target=clients.fire, args=(n,), daemon=True) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while clients.count() < BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        clients.stop.set()
        for thread in threads:
            thread.join(timeout=15)
    assert clients.count() >= BEFORE_KILL
    return clients


async def _records(store: Store) -> tuple[list[Incident], list[Report], dict[str, int]]:
    incidents, reports = [], []
    after: str | None = None
    while True:
        page = await store.incidents.list(500, after)
        incidents += page.data
        if (after := page.next) is None:
            break
    while True:
        rpage = await store.reports.list(None, 500, after)
        reports += rpage.data
        if (after := rpage.next) is None:
            break
    return incidents, reports, await store.reports.outbox()


def delivered_reports(hook: WebhookReceiver) -> set[str]:
    return {e["report"]["id"] for e in hook.delivered().values() if e["type"] == "report.queued"}


@pytest.mark.parametrize("sink", ["hangs", "fails"])
def test_kill_9_loses_no_report(store_url: str, sink: str, upstream: Upstream, tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(TEST_POLICY, encoding="utf-8")
    config = tmp_path / "gateway.yaml"
    # --policy too: the default policy would otherwise be the bundled one, with its guard model.
    args = ["--store", store_url, "--config", str(config), "--policy", str(tmp_path / "policy.yaml")]
    env = {"MODGATE_SPOOL_DIR": str(tmp_path / "spool")}
    broken = WebhookReceiver(stall_first=10**9) if sink == "hangs" else WebhookReceiver(fail_first=10**9)
    with receiving(broken) as url:
        write_config(tmp_path, upstream, url)
        clients = kill_while_blocking(args, env)
    assert broken.delivered() == {}
    incidents, reports, outbox = on_store(store_url, _records)
    by_incident = {r.incident_id: r for r in reports}
    assert set(clients.seen) <= {i.id for i in incidents}
    assert set(clients.seen) <= set(by_incident), "a report the client was told about is missing"
    # Every blocking rule of this policy reports: incident and report are one atomic write, so
    # not even a response the kill cut off leaves an incident without its report.
    assert {i.id for i in incidents} == set(by_incident), "an incident was stored without its report"
    assert outbox["dead"] == 0 and outbox["pending"] >= len(reports)

    working = WebhookReceiver()
    with receiving(working) as url:
        write_config(tmp_path, upstream, url)
        with gateway_process(args, env=env):
            deadline = time.monotonic() + 30
            while True:
                _, after_restart, outbox = on_store(store_url, _records)
                done = outbox["pending"] == 0 and delivered_reports(working) == {r.id for r in reports}
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    assert {r.id for r in after_restart} == {r.id for r in reports}
    assert delivered_reports(working) == {r.id for r in reports}
    assert all(r.signed_with(SECRET) for r in working.answered())
    assert outbox == {"pending": 0, "dead": 0}
    lines = [x for f in (tmp_path / "sink").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert {r.id for r in reports} <= {json.loads(x)["report"]["id"] for x in lines}

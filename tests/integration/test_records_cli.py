"""The records CLI beside a running gateway, on its store: the gateway's pseudonyms, its
report outbox (a change made from the shell reaches the sinks) and its complaints."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner, Result

from gateway.cli import app
from gateway.enforcement import STATUS_HEADER
from tests.conftest import TEST_POLICY, Gateway, GatewayFactory

POLICY = TEST_POLICY + (
    "enforcement:\n  window: 24h\n  ladder:\n"
    "    - {strikes: 1, action: warn}\n    - {strikes: 2, action: suspend}\n"
)
CONFIG = """
upstreams: {main: {base_url: "{upstream}"}}
routes: [{upstream: main, policy: rules}]
policies: {rules: policy.yaml}
reports: {jsonl_dir: sink, retry_base_s: 0.05}
"""
USER = "dana@example.com"


def cli(gw: Gateway, *args: str) -> Result:
    env = {"LOGNAME": "kim", "MODGATE_STORE": gw.state.settings.store, "MODGATE_CONFIG": None}
    return CliRunner().invoke(app, list(args), env=env)


def out(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def chat(client: httpx.Client, text: str) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "user": USER}
    return client.post("/v1/chat/completions", json=body)


def sink_events(folder: Path, kind: str) -> list[dict[str, Any]]:
    """The JSONL sink's events of type ``kind``, once one has come (the gateway's worker writes them)."""
    deadline = time.monotonic() + 15
    while True:
        lines = [x for f in sorted(folder.glob("reports-*.jsonl")) for x in f.read_text().splitlines()]
        events = [e for e in map(json.loads, lines) if e["type"] == kind]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_users_are_found_by_the_gateways_pseudonym_and_reinstated(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=POLICY, config=CONFIG)
    with gw.http() as client:
        for _ in range(2):
            assert chat(client, "zorblax").status_code == 400
        assert chat(client, "hello").status_code == 403  # suspended

        shown = out(cli(gw, "users", "show", USER))
        assert gw.state.pseudonymizer is not None and shown["user"] == gw.state.pseudonymizer(USER)
        assert shown["status"] == "suspended" and len(shown["strikes"]) == 2

        done = out(cli(gw, "users", "reinstate", USER, "--note", "appeal upheld"))
        assert done["status"] == "ok" and done["history"][-1]["actor"] == "cli:kim"
        again = chat(client, "hello")
        assert again.status_code == 200 and STATUS_HEADER not in again.headers


def test_a_report_confirmed_from_the_shell_reaches_the_gateways_sinks(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=POLICY, config=CONFIG)
    with gw.http() as client:
        incident_id = chat(client, "炸药配方").json()["error"]["modgate"]["incident_id"]
    listed = out(cli(gw, "reports", "list", "--state", "queued"))
    assert [r["incident_id"] for r in listed["data"]] == [incident_id]
    report_id = listed["data"][0]["id"]
    out(cli(gw, "reports", "confirm", report_id, "--note", "clear case"))
    [event] = sink_events(gw.tmp / "sink", "report.confirmed")
    assert event["report"]["id"] == report_id
    assert event["report"]["history"][-1]["actor"] == "cli:kim"
    assert event["report"]["history"][-1]["note"] == "clear case"


def test_a_complaint_sent_to_the_gateway_is_resolved_from_the_shell(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=POLICY, config=CONFIG)
    with gw.http() as client:
        sent = client.post("/v1/complaints", json={"text": "这个回答有问题", "incident_id": "inc_x"})
        assert sent.status_code == 201
    complaint_id = sent.json()["id"]
    [listed] = out(cli(gw, "complaints", "list", "--status", "open"))["data"]
    assert listed["id"] == complaint_id and listed["text"] == "这个回答有问题"
    done = out(cli(gw, "complaints", "resolve", complaint_id, "--resolution", "answer withdrawn"))
    assert done["status"] == "resolved" and done["resolved_by"] == "cli:kim"
    assert out(cli(gw, "complaints", "list", "--status", "open"))["data"] == []

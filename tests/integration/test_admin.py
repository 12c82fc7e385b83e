"""The admin API and the incidents CLI, against a real gateway and store."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.incidents import Incident
from gateway.retention import purge_once
from tests.conftest import TEST_POLICY, Gateway, GatewayFactory

TOKEN = "adm-0123456789abcdef"
AUDITOR = "aud-0123456789abcdef"
CONFIG = f"""
upstreams: {{main: {{base_url: "{{upstream}}"}}}}
routes: [{{upstream: main, policy: rules}}]
policies: {{rules: policy.yaml}}
admin_tokens: {{alice: "{TOKEN}", auditor: "{AUDITOR}"}}
"""
BLOCKED = {"model": "m", "messages": [{"role": "user", "content": "zorblax"}]}


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def admin_gw(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway(config=CONFIG)


def _block(client: httpx.Client, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        resp = client.post("/v1/chat/completions", json=BLOCKED)
        assert resp.status_code == 400
        ids.append(resp.json()["error"]["modgate"]["incident_id"])
    return ids


def test_admin_api_is_off_without_a_token(gateway: Gateway) -> None:
    with gateway.http() as client:
        resp = client.get("/admin/incidents", headers=auth())
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        auth("wrong-token-0123456789"),
        {"authorization": TOKEN},
        {"authorization": "Basic YWRtaW46eA=="},
        auth(TOKEN[:-1]),
    ],
)
def test_admin_needs_a_valid_bearer_token(admin_gw: Gateway, headers: dict[str, str]) -> None:
    with admin_gw.http() as client:
        for method, path in [("GET", "/admin/incidents"), ("POST", "/admin/policy/reload")]:
            resp = client.request(method, path, headers=headers)
            assert resp.status_code == 401
            assert resp.json()["error"]["type"] == "authentication_error"


def test_env_token_also_works_as_actor_admin(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(admin_token="env-token-0123456789")
    with gateway.http() as client:
        assert client.get("/admin/incidents", headers=auth("env-token-0123456789")).status_code == 200
        reload = client.post("/admin/policy/reload", headers=auth("env-token-0123456789"))
    assert reload.status_code == 200 and reload.json()["actor"] == "admin"


def test_incidents_listed_newest_first_in_pages(admin_gw: Gateway) -> None:
    with admin_gw.http() as client:
        ids = _block(client, 5)
        first = client.get("/admin/incidents", params={"limit": 2}, headers=auth()).json()
        assert first["object"] == "list" and [i["id"] for i in first["data"]] == ids[::-1][:2]
        second = client.get("/admin/incidents", params={"limit": 2, "after": first["next"]}, headers=auth())
        assert [i["id"] for i in second.json()["data"]] == ids[::-1][2:4]
        rest = client.get("/admin/incidents", params={"after": second.json()["next"]}, headers=auth()).json()
        assert [i["id"] for i in rest["data"]] == ids[:1] and rest["next"] is None
        one = client.get(f"/admin/incidents/{ids[0]}", headers=auth())
        assert one.status_code == 200 and one.json()["action"] == "block"
        assert one.json()["risks"][0]["code"] == "A.1.d"
        missing = client.get("/admin/incidents/inc_nope", headers=auth())
        assert missing.status_code == 404
        for bad in ({"limit": 0}, {"limit": 501}, {"limit": "ten"}):
            resp = client.get("/admin/incidents", params=bad, headers=auth())
            assert resp.status_code == 400 and resp.json()["error"]["param"] == "limit"


def test_policy_reload_applies_a_good_file_and_keeps_the_old_on_a_bad_one(admin_gw: Gateway) -> None:
    policy_file = admin_gw.tmp / "policy.yaml"
    policy_file.write_text(TEST_POLICY, encoding="utf-8")
    new_term = {"model": "m", "messages": [{"role": "user", "content": "quuxword"}]}
    with admin_gw.http() as client:
        assert client.post("/v1/chat/completions", json=new_term).status_code == 200
        policy_file.write_text(TEST_POLICY.replace('"zorblax",', '"zorblax", "quuxword",'), encoding="utf-8")
        resp = client.post("/admin/policy/reload", headers=auth(AUDITOR))
        assert resp.status_code == 200 and resp.json()["actor"] == "auditor"
        assert client.post("/v1/chat/completions", json=new_term).status_code == 400
        version = client.get("/readyz").json()

        policy_file.write_text(TEST_POLICY + "\nunknown_key: 1\n", encoding="utf-8")
        bad = client.post("/admin/policy/reload", headers=auth())
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_policy"
        assert "unknown_key" in bad.json()["error"]["message"]
        assert client.post("/v1/chat/completions", json=new_term).status_code == 400  # still the good one
        assert client.get("/readyz").json()["policy"] == version["policy"]


def test_incidents_cli_lists_shows_and_purges(admin_gw: Gateway) -> None:
    with admin_gw.http() as client:
        ids = _block(client, 3)
    store = admin_gw.state.settings.store
    runner = CliRunner()
    listed = runner.invoke(cli, ["incidents", "list", "--store", store, "--limit", "2"])
    assert listed.exit_code == 0, listed.output
    assert ids[2] in listed.output and ids[1] in listed.output and ids[0] not in listed.output
    shown = runner.invoke(cli, ["incidents", "show", ids[0], "--store", store])
    assert shown.exit_code == 0 and '"action": "block"' in shown.output
    assert runner.invoke(cli, ["incidents", "show", "inc_nope", "--store", store]).exit_code == 1
    short = runner.invoke(cli, ["incidents", "purge", "--older-than", "30d", "--store", store])
    assert short.exit_code == 2 and "six months" in short.output
    kept = runner.invoke(cli, ["incidents", "purge", "--older-than", "190d", "--store", store])
    assert kept.exit_code == 0 and '"purged": 0' in kept.output
    time.sleep(0.01)
    gone = runner.invoke(cli, ["incidents", "purge", "--older-than", "0.001s", "--store", store, "--force"])
    assert gone.exit_code == 0 and '"purged": 3' in gone.output
    assert admin_gw.incidents() == []


def test_daily_purge_deletes_only_what_is_past_retention(admin_gw: Gateway) -> None:
    old = Incident.from_dict({**_sample(), "id": "inc_old", "created_at": time.time() - 200 * 86400})
    recent = Incident.from_dict({**_sample(), "id": "inc_recent", "created_at": time.time() - 100 * 86400})

    async def run() -> tuple[int, list[str]]:
        from gateway.store.sqlite import SQLiteStore

        store = SQLiteStore(admin_gw.state.settings.store)
        await store.open()
        try:
            for one in (old, recent):
                await store.incidents.record(one)
            deleted = await purge_once(store, admin_gw.state.all_policies)
            return deleted, [i.id for i in (await store.incidents.list()).data]
        finally:
            await store.close()

    deleted, left = asyncio.run(run())
    assert deleted == 1 and left == ["inc_recent"]


def _sample() -> dict[str, object]:
    return {
        "request_id": "r", "tenant": "t", "route": "x", "model": None, "direction": "input",
        "channel": "user", "action": "block", "risks": [], "policy": "p", "policy_version": "v",
    }  # fmt: skip


def _events(folder: Path, count: int) -> list[dict[str, Any]]:
    """The JSONL sink's events once ``count`` have arrived (the worker runs in the gateway)."""
    deadline = time.monotonic() + 15
    while True:
        lines = [line for f in sorted(folder.glob("reports-*.jsonl")) for line in f.read_text().splitlines()]
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)


def test_reports_flow_from_a_block_through_review_to_the_sink(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(config=CONFIG + "reports: {jsonl_dir: sink}\n")
    sink = gateway.tmp / "sink"
    with gateway.http() as client:
        resp = client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "炸药配方，打 13812345678"}]},
        )
        incident_id = resp.json()["error"]["modgate"]["incident_id"]
        listed = client.get("/admin/reports", headers=auth()).json()
        assert [r["incident_id"] for r in listed["data"]] == [incident_id]
        report = listed["data"][0]
        assert report["state"] == "queued" and report["evidence"]["reportable"] == ["A.1.d"]
        assert "138****5678" in report["evidence"]["excerpt"] and "13812345678" not in json.dumps(report)
        rid = report["id"]

        assert (
            client.get("/admin/reports", params={"state": "confirmed"}, headers=auth()).json()["data"] == []
        )
        bad = client.get("/admin/reports", params={"state": "lost"}, headers=auth())
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "state"
        early = client.post(f"/admin/reports/{rid}/file", headers=auth())
        assert early.status_code == 409 and early.json()["error"]["code"] == "conflict"
        confirmed = client.post(f"/admin/reports/{rid}/confirm", json={"note": "核实无误"}, headers=auth())
        assert confirmed.status_code == 200 and confirmed.json()["state"] == "confirmed"
        filed = client.post(f"/admin/reports/{rid}/file", json={"note": "报送网信办"}, headers=auth(AUDITOR))
        steps = filed.json()["history"]
        assert [(s["to_state"], s["actor"], s["note"]) for s in steps[-2:]] == [
            ("confirmed", "alice", "核实无误"),
            ("filed", "auditor", "报送网信办"),
        ]
        assert client.post(f"/admin/reports/{rid}/dismiss", headers=auth()).status_code == 409
        assert client.post("/admin/reports/rpt_nope/confirm", headers=auth()).status_code == 404
        assert client.post(f"/admin/reports/{rid}/explode", headers=auth()).status_code == 404
        odd = client.post(f"/admin/reports/{rid}/confirm", json={"notes": "x"}, headers=auth())
        assert odd.status_code == 400
        assert client.get(f"/admin/reports/{rid}", headers=auth()).json()["state"] == "filed"
        metrics = client.get("/metrics").text
    assert (
        'modgate_reports{state="filed"} 1.0' in metrics and 'modgate_reports{state="queued"} 0.0' in metrics
    )
    events = _events(sink, 3)
    assert [e["type"] for e in events] == ["report.queued", "report.confirmed", "report.filed"]
    assert {e["report"]["id"] for e in events} == {rid}

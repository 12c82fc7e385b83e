"""/admin/users and /admin/complaints through a real gateway: the enforcement record, the
reinstatement that lets a suspended user back in, and the complaint queue."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import TEST_POLICY, Gateway, GatewayFactory, mock

TOKEN = "adm-0123456789abcdef"
CONFIG = f"""
upstreams: {{main: {{base_url: "{{upstream}}"}}}}
routes: [{{upstream: main, policy: rules}}]
policies: {{rules: policy.yaml}}
admin_tokens: {{ops: "{TOKEN}"}}
"""
LADDER = """
enforcement:
  window: 24h
  ladder:
    - {strikes: 1, action: warn}
    - {strikes: 2, action: suspend, for: 7d}
complaints: {response_deadline: 1s}
"""
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def gw(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway(policy=TEST_POLICY + LADDER, config=CONFIG)


def _chat(gw: Gateway, user: str, text: str) -> httpx.Response:
    body = {"model": "m", "user": user, "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{gw.base}/v1/chat/completions", json=body, headers=mock(content="ok"))


def test_user_record_and_reinstatement(gw: Gateway) -> None:
    user = "用户-42"
    with gw.http() as client:
        fresh = client.get(f"/admin/users/{user}", headers=AUTH).json()
        assert fresh["status"] == "ok" and fresh["strikes"] == [] and fresh["user"].startswith("u_")
        assert user not in str(fresh)
        assert _chat(gw, user, "zorblax").status_code == 400
        assert _chat(gw, user, "zorblax").status_code == 400
        suspended = _chat(gw, user, "hello")
        assert suspended.status_code == 403 and suspended.json()["error"]["code"] == "user_suspended"
        record = client.get(f"/admin/users/{user}", headers=AUTH).json()
        assert record["user"] == fresh["user"]
        assert record["status"] == "suspended" and record["standing"]["status"] == "suspended"
        assert record["strikes_in_window"] == 2
        assert [e["kind"] for e in record["history"]].count("strike") == 2

        back = client.post(f"/admin/users/{user}/reinstate", json={"note": "误判，已复核"}, headers=AUTH)
        assert back.status_code == 200 and back.json()["status"] == "ok" and back.json()["strikes"] == []
        last = back.json()["history"][-1]
        assert (last["kind"], last["actor"], last["detail"]) == ("reinstate", "ops", "误判，已复核")
        assert _chat(gw, user, "hello").status_code == 200  # the very next request is let in
        odd = client.post(f"/admin/users/{user}/reinstate", json={"why": "x"}, headers=AUTH)
        assert odd.status_code == 400
        assert client.get(f"/admin/users/{user}").status_code == 401


def test_complaints_queue_lists_flags_overdue_and_resolves_once(gw: Gateway) -> None:
    ids = []
    for text in ("拦截错误", "wrongly blocked", "请复核"):
        resp = httpx.post(f"{gw.base}/v1/complaints", json={"text": text, "contact": "a@example.com"})
        assert resp.status_code == 201
        ids.append(resp.json()["id"])
    time.sleep(1.1)  # past the 1 s response deadline of this policy
    with gw.http() as client:
        listed = client.get("/admin/complaints", params={"limit": 2}, headers=AUTH).json()
        assert [c["id"] for c in listed["data"]] == ids[::-1][:2]
        assert all(c["overdue"] for c in listed["data"])
        rest = client.get("/admin/complaints", params={"after": listed["next"]}, headers=AUTH).json()
        assert [c["id"] for c in rest["data"]] == ids[:1]

        done = client.post(f"/admin/complaints/{ids[1]}/resolve", json={"resolution": "已解除"}, headers=AUTH)
        assert done.status_code == 200
        body = done.json()
        assert (body["status"], body["resolved_by"], body["resolution"], body["overdue"]) == (
            "resolved", "ops", "已解除", False,
        )  # fmt: skip
        again = client.post(f"/admin/complaints/{ids[1]}/resolve", json={"resolution": "x"}, headers=AUTH)
        assert again.status_code == 409
        empty = client.post(f"/admin/complaints/{ids[0]}/resolve", json={"resolution": " "}, headers=AUTH)
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "resolution"
        missing = client.post("/admin/complaints/cmp_nope/resolve", json={"resolution": "x"}, headers=AUTH)
        assert missing.status_code == 404
        assert client.get(f"/admin/complaints/{ids[1]}", headers=AUTH).json()["status"] == "resolved"
        open_ = client.get("/admin/complaints", params={"status": "open"}, headers=AUTH).json()
        assert [c["id"] for c in open_["data"]] == [ids[2], ids[0]]
        resolved = client.get("/admin/complaints", params={"status": "resolved"}, headers=AUTH).json()
        assert [c["id"] for c in resolved["data"]] == [ids[1]]
        assert client.get("/admin/complaints", params={"status": "x"}, headers=AUTH).status_code == 400
        metrics = client.get("/metrics").text
    assert "modgate_complaints_open 2.0" in metrics


def test_openai_client_sees_suspension_as_permission_error(gw: Gateway) -> None:
    client = gw.openai()
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="m", user="bob", messages=[{"role": "user", "content": "zorblax"}]
            )
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="m", user="bob", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "user_suspended"

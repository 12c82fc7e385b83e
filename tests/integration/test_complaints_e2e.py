"""POST /v1/complaints through a real gateway on loopback."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from gateway.records import Complaint
from gateway.store.base import open_store
from tests.conftest import TEST_POLICY, Gateway, GatewayFactory

KEY = "gw-complaints-key-0001"
CONFIG = f"""
upstreams:
  main: {{base_url: "{{upstream}}"}}
routes:
  - {{name: main, upstream: main}}
keys:
  - {{name: app, key: "{KEY}", tenant: acme}}
"""


def stored(gw: Gateway, complaint_id: str) -> Complaint | None:
    async def fetch() -> Complaint | None:
        store = open_store(gw.state.settings.store)
        await store.open()
        try:
            return await store.complaints.get(complaint_id)
        finally:
            await store.close()

    return asyncio.run(fetch())


def test_complaint_is_stored_with_a_deadline(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gw = make_gateway(policy=TEST_POLICY + "complaints:\n  response_deadline: 2d\n")
    body = {
        "text": "我的问题被错误拦截了。My question was wrongly blocked.",
        "request_id": "req_not_known_here",
        "incident_id": "inc_0123",
        "contact": "zhang.san@example.com 13800138000",
    }
    before = time.time()
    with caplog.at_level(logging.INFO, logger="modgate.complaints"):
        resp = httpx.post(f"{gw.base}/v1/complaints", json=body)
    assert resp.status_code == 201
    answer = resp.json()
    assert answer["object"] == "complaint" and answer["status"] == "open"
    assert answer["id"].startswith("cmp_")
    assert before <= answer["created_at"] <= time.time()
    assert answer["due_at"] == pytest.approx(answer["created_at"] + 2 * 86400)
    complaint = stored(gw, answer["id"])
    assert complaint is not None
    assert (complaint.text, complaint.request_id, complaint.incident_id, complaint.contact) == (
        body["text"],
        body["request_id"],
        body["incident_id"],
        body["contact"],
    )
    assert complaint.status == "open" and complaint.due_at == answer["due_at"]
    logged = caplog.text
    assert answer["id"] in logged and "inc_0123" in logged
    assert "zhang.san" not in logged and "13800138000" not in logged and "wrongly" not in logged


def test_minimal_complaint_and_default_deadline(gateway: Gateway) -> None:
    resp = httpx.post(f"{gateway.base}/v1/complaints", json={"text": "x"})
    assert resp.status_code == 201
    answer = resp.json()
    assert answer["due_at"] == pytest.approx(answer["created_at"] + 15 * 86400)  # the default policy's
    complaint = stored(gateway, answer["id"])
    assert complaint is not None and complaint.contact is None and complaint.incident_id is None


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"\xff\xfe", None),
        (b'["a list"]', None),
        (b"{}", "text"),
        (b'{"text": ""}', "text"),
        (b'{"text": 5}', "text"),
        (b'{"text": null}', "text"),
        (('{"text": "' + "长" * 10_001 + '"}').encode(), "text"),
        (b'{"text": "ok", "request_id": 7}', "request_id"),
        (b'{"text": "ok", "contact": ["a"]}', "contact"),
        (b'{"text": "ok", "severity": "high"}', "severity"),
    ],
)
def test_bad_complaints_are_400(gateway: Gateway, content: bytes, param: str | None) -> None:
    resp = httpx.post(
        f"{gateway.base}/v1/complaints", content=content, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert "长长" not in error["message"]  # never echoes the text


def test_ten_thousand_characters_are_accepted(gateway: Gateway) -> None:
    resp = httpx.post(f"{gateway.base}/v1/complaints", json={"text": "长" * 10_000})
    assert resp.status_code == 201


def test_complaints_need_the_gateway_key_when_keys_exist(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(config=CONFIG)
    anonymous = httpx.post(f"{gw.base}/v1/complaints", json={"text": "hello"})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.post(
        f"{gw.base}/v1/complaints", json={"text": "hello"}, headers={"authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    ok = httpx.post(
        f"{gw.base}/v1/complaints", json={"text": "hello"}, headers={"authorization": f"Bearer {KEY}"}
    )
    assert ok.status_code == 201


def test_complaint_when_the_store_is_down_is_503(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(store="redis://127.0.0.1:1/0")
    resp = httpx.post(f"{gw.base}/v1/complaints", json={"text": "hello", "contact": "me@example.com"})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "unavailable"
    assert 'modgate_store_errors_total{operation="complaint"} 1.0' in httpx.get(f"{gw.base}/metrics").text

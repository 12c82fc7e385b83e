"""Bad input, errors, passthrough, moderation, health and metrics over real HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest
import redis

from gateway.records import Report
from gateway.store.base import open_store
from tests.conftest import Gateway, GatewayFactory, Upstream, mock
from tests.support.servers import free_port

MSG = [{"role": "user", "content": "hello"}]


def _error(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert resp.headers["x-request-id"]
    return body["error"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": "hi"}', "messages"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "messages.0.content"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
    ],
    ids=[
        "malformed",
        "utf8",
        "array",
        "no-messages",
        "messages-type",
        "model-type",
        "content-type",
        "stream-type",
    ],
)
def test_bad_bodies_are_400_in_openai_shape(
    gateway: Gateway, upstream: Upstream, body: bytes, fragment: str
) -> None:
    upstream.app.clear()
    with gateway.http() as client:
        resp = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    err = _error(resp)
    assert err["type"] == "invalid_request_error"
    assert fragment in err["message"]
    assert upstream.app.requests == []


def test_body_limit_413_by_length_and_by_stream(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(max_body_bytes=2048)
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * 4096 + b'"}]}'
    with gateway.http() as client:
        resp = client.post("/v1/chat/completions", content=big)
        assert resp.status_code == 413 and _error(resp)["code"] == "payload_too_large"

        def chunks():  # no Content-Length: counted as it arrives
            for i in range(0, len(big), 512):
                yield big[i : i + 512]

        resp = client.post("/v1/chat/completions", content=chunks())
        assert resp.status_code == 413


def test_unknown_paths_are_404_never_proxied(gateway: Gateway, upstream: Upstream) -> None:
    upstream.app.clear()
    with gateway.http() as client:
        for method, path in [("POST", "/v1/audio/speech"), ("POST", "/v1/images/edits"), ("GET", "/v1/files"),
                             ("DELETE", "/v1/models/x"), ("GET", "/admin")]:  # fmt: skip
            resp = client.request(method, path)
            assert resp.status_code == 404, path
            assert _error(resp)["code"] == "not_found"
    assert upstream.app.requests == []


def test_models_passthrough(gateway: Gateway, upstream: Upstream) -> None:
    models = gateway.openai().models.list()
    assert [m.id for m in models] == ["mock-model"]
    assert upstream.app.last().path == "/v1/models"


def test_configured_passthrough_path(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    config = """
upstreams:
  main: {base_url: "{upstream}"}
routes:
  - {upstream: main}
passthrough: ["/v1/files/*"]
"""
    gateway = make_gateway(config=config)
    with gateway.http() as client:
        assert client.get("/v1/files/abc?purpose=x").status_code == 200
        assert upstream.app.last().path == "/v1/files/abc"
        assert client.get("/v1/filesystem").status_code == 404
        upstream.app.clear()
        body = {"model": "m", "messages": [{"role": "user", "content": "zorblax"}]}
        for sneaky in ("/v1/files/%2e%2e/chat/completions", "/v1/files/%2E%2E/chat/completions",
                       "/v1/files/.%2e/chat/completions", "/v1/files/%2e%2e%2fchat/completions"):  # fmt: skip
            resp = client.post(sneaky, json=body)
            assert resp.status_code == 404, sneaky
        assert upstream.app.requests == []  # a passthrough prefix is no way around screening


@pytest.mark.parametrize(
    ("script", "status", "code"),
    [
        ({"type": "status", "status": 500}, 500, None),
        ({"type": "status", "status": 503, "body": "<html>down</html>"}, 503, "upstream_error"),
        (
            {
                "type": "status",
                "status": 401,
                "body": {"error": {"message": "bad key", "type": "auth", "code": "k"}},
            },
            401,
            "k",
        ),
        ({"type": "not_json"}, 502, "upstream_unavailable"),
    ],
    ids=["500-json", "503-text", "401", "not-json"],
)
def test_upstream_errors_map_to_openai_errors(
    gateway: Gateway, script: dict, status: int, code: str | None
) -> None:
    with gateway.http() as client:
        resp = client.post(
            "/v1/chat/completions", json={"model": "m", "messages": MSG}, headers=mock(**script)
        )
    assert resp.status_code == status
    err = _error(resp)
    if code:
        assert err["code"] == code


def test_upstream_timeout_is_504(make_gateway: GatewayFactory) -> None:
    config = """
upstreams:
  main: {base_url: "{upstream}", timeout: {read: 0.3}}
routes:
  - {upstream: main}
"""
    gateway = make_gateway(config=config)
    with gateway.http() as client:
        resp = client.post(
            "/v1/chat/completions", json={"model": "m", "messages": MSG}, headers=mock(type="slow")
        )
    assert resp.status_code == 504 and _error(resp)["code"] == "upstream_timeout"


def test_upstream_unreachable_is_502(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(upstream="http://127.0.0.1:9/v1")
    with gateway.http() as client:
        resp = client.post("/v1/chat/completions", json={"model": "m", "messages": MSG})
    assert resp.status_code in (502, 504)
    assert _error(resp)["type"] == "upstream_error"


KEYED = """
upstreams:
  main: {base_url: "{upstream}", api_key: "sk-upstream-secret-0001"}
  other: {base_url: "{upstream}", headers: {x-route: other}}
routes:
  - {name: qwen, model: "qwen-*", upstream: other}
  - {name: acme-only, keys: [acme], upstream: main, policy: strict}
  - {name: main, upstream: main}
policies:
  strict: strict.yaml
keys:
  - {name: acme, key: "gw-acme-key-0000000001", tenant: acme}
  - {name: beta, key: "gw-beta-key-0000000002", tenant: beta}
"""
STRICT = """
name: strict
extends: default
classifiers:
  extra: {type: lexicon, terms: {A.1.h: ["bananas"]}}
rules:
  A.1.h: {input: block, output: block}
"""


def test_gateway_keys_routes_and_tenants(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    (tmp_path / "strict.yaml").write_text(STRICT)
    gateway = make_gateway(config=KEYED.replace("strict.yaml", "../strict.yaml"))
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "I like bananas"}]}
    with gateway.http() as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 401
        resp = client.post(
            "/v1/chat/completions", json=body, headers={"authorization": "Bearer wrong-key-123456789"}
        )
        assert resp.status_code == 401 and _error(resp)["type"] == "authentication_error"
        resp = client.post(
            "/v1/chat/completions", json=body, headers={"authorization": "Bearer gw-beta-key-0000000002"}
        )
        assert resp.status_code == 200  # beta: default policy, bananas are fine
        assert upstream.app.last().headers["authorization"] == "Bearer sk-upstream-secret-0001"
        resp = client.post("/v1/chat/completions", json=body, headers={"x-api-key": "gw-acme-key-0000000001"})
        assert resp.status_code == 400 and _error(resp)["code"] == "content_filter"  # acme: strict policy
        incident = gateway.incidents()[0]
        assert incident.tenant == "acme" and incident.route == "acme-only"
        qwen = {**body, "model": "qwen-max"}
        resp = client.post("/v1/chat/completions", json=qwen, headers={"x-api-key": "gw-beta-key-0000000002"})
        assert resp.status_code == 200 and upstream.app.last().headers["x-route"] == "other"


def test_open_proxy_warning(make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture) -> None:
    config = (
        'upstreams:\n  main: {base_url: "{upstream}", api_key: "sk-upstream-secret-0001"}\n'
        "routes:\n  - {upstream: main}\n"
    )
    with caplog.at_level("WARNING"):
        make_gateway(config=config)
    assert any("OPEN PROXY" in r.getMessage() for r in caplog.records)


def test_moderations_endpoint(gateway: Gateway) -> None:
    client = gateway.openai()
    result = client.moderations.create(
        input=["a nice day", "how to zorblax", "请告诉我炸药配方", "mail me: a@b.cn"]
    )
    flagged = [r.flagged for r in result.results]
    assert flagged == [False, True, True, False]
    second = result.results[1].model_dump()
    assert second["categories"]["A.1.d"] is True and second["category_scores"]["A.1.d"] == 1.0
    assert second["modgate"]["action"] == "block"
    assert second["modgate"]["risks"][0]["classifier"] == "banned-terms"
    fourth = result.results[3].model_dump()
    assert (
        fourth["category_scores"]["A.4.f"] == 1.0 and fourth["categories"]["A.4.f"] is False
    )  # input allows


def test_moderations_bad_input(gateway: Gateway) -> None:
    with gateway.http() as client:
        resp = client.post("/v1/moderations", json={"input": 5})
    assert resp.status_code == 400 and _error(resp)["param"] == "input"


def test_health_ready_and_metrics(gateway: Gateway) -> None:
    gateway.openai().chat.completions.create(model="m", messages=MSG)
    with pytest.raises(openai.BadRequestError):
        gateway.openai().chat.completions.create(model="m", messages=[{"role": "user", "content": "zorblax"}])
    with gateway.http() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and all(ready["checks"].values())
        text = client.get("/metrics").text
    names = ["requests_total", "decisions_total", "classifier_seconds", "upstream_seconds",
             "gateway_added_seconds", "stream_holdback_seconds", "stream_cuts_total"]  # fmt: skip
    for name in names:
        assert f"modgate_{name}" in text
    assert 'modgate_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'modgate_decisions_total{action="block",code="A.1.d",direction="input"}' in text


def test_request_id_is_kept_or_made(gateway: Gateway) -> None:
    with gateway.http() as client:
        assert (
            client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
        )
        made = client.get("/healthz", headers={"x-request-id": "bad id with spaces"}).headers["x-request-id"]
        assert made.startswith("req_")


def test_stream_metrics_record_holdback_and_cuts(gateway: Gateway) -> None:
    stream = gateway.openai().chat.completions.create(
        model="m", messages=MSG, stream=True, extra_headers=mock(type="sse", deltas=["ok ", "zor", "blax"])
    )
    list(stream)
    time.sleep(0.05)
    with gateway.http() as client:
        text = client.get("/metrics").text
    assert 'modgate_stream_cuts_total{code="A.1.d",mode="hold"} 1.0' in text
    list(
        gateway.openai().chat.completions.create(
            model="m",
            messages=MSG,
            stream=True,
            extra_headers=mock(type="sse", deltas=["a ", "b ", "c"], delay_ms=20),
        )
    )
    with gateway.http() as client:
        text = client.get("/metrics").text
    count = [line for line in text.splitlines() if line.startswith("modgate_stream_holdback_seconds_count")]
    assert count and float(count[0].split()[-1]) >= 1


async def _reports(url: str) -> list[Report]:
    store = open_store(url)
    await store.open()
    try:
        return (await store.reports.list()).data
    finally:
        await store.close()


def test_store_down_readyz_degraded_decisions_enforced_and_records_spooled_then_replayed(
    make_gateway: GatewayFactory, upstream: Upstream, tmp_path: Path
) -> None:
    port = free_port()
    gateway = make_gateway(store=f"redis://127.0.0.1:{port}/0")  # nothing listens there yet
    with gateway.http() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded" and ready.json()["checks"]["store"] is False
        upstream.app.clear()
        resp = client.post(
            "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "zorblax"}]}
        )
        assert resp.status_code == 400 and _error(resp)["code"] == "content_filter"  # enforced all the same
        incident_id = resp.json()["error"]["modgate"]["incident_id"]
        assert upstream.app.requests == []
        metrics = client.get("/metrics").text
        assert 'modgate_store_errors_total{operation="record_incident"} 1.0' in metrics
        assert client.get("/readyz").json()["spooled"] == 2  # the incident and its report (A.1.d reports)
        spooled = (gateway.tmp / "spool" / "spool.jsonl").read_text(encoding="utf-8")
        assert incident_id in spooled and "zorblax" in spooled

        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while client.get("/readyz").json()["spooled"] and time.monotonic() < deadline:
                time.sleep(0.2)
            ready = client.get("/readyz").json()
            assert ready["status"] == "ready" and ready["spooled"] == 0
            stored = redis.Redis(port=port, decode_responses=True).get(f"modgate:incident:{incident_id}")
            assert stored is not None and json.loads(stored)["action"] == "block"
            reports = asyncio.run(_reports(f"redis://127.0.0.1:{port}/0"))
            assert [r.incident_id for r in reports] == [incident_id] and reports[0].state == "queued"
        finally:
            server.terminate()
            server.wait(10)

"""The user enforcement ladder end to end: official openai client → gateway → scripted upstream.

Each gateway has its own SQLite file (one test runs on Redis, database 11); the policy is the
test policy (``zorblax`` blocks, ``refuseword`` refuses) plus an ``enforcement:`` ladder.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import httpx
import openai
import pytest
import redis.asyncio as aioredis

from gateway.enforcement import NOTICE_HEADER, STATUS_HEADER
from gateway.privacy import Pseudonymizer
from gateway.records import UserRecord
from gateway.store.base import open_store
from tests.conftest import TEST_POLICY, Gateway, GatewayFactory, mock

WARNING = "请注意：多次违规将被限制。Repeated violations will restrict your access."
BAD: list[Any] = [{"role": "user", "content": "how to zorblax a city"}]
FINE: list[Any] = [{"role": "user", "content": "Tell me a story about a cat."}]
SECRET = "test-pseudonym-secret-0123456789"
KEY_ALICE = "gw-alice-key-00000001"
KEY_SHARED = "gw-shared-key-0000002"
CONFIG = f"""
upstreams:
  main: {{base_url: "{{upstream}}"}}
routes:
  - {{name: main, upstream: main, policy: enforced}}
policies:
  enforced: policy.yaml
keys:
  - {{name: alice-app, key: "{KEY_ALICE}", tenant: acme, user: "alice@example.com"}}
  - {{name: shared, key: "{KEY_SHARED}", tenant: acme}}
pseudonym_secret: "{SECRET}"
"""


def enforced(*steps: str, window: str = "24h") -> str:
    ladder = "".join(f"    - {step}\n" for step in steps)
    return (
        TEST_POLICY
        + f"enforcement:\n  window: {window}\n  warning: {json.dumps(WARNING)}\n  ladder:\n{ladder}"
    )


LADDER = enforced(
    "{strikes: 1, action: warn}",
    "{strikes: 3, action: restrict, rate: 3/min}",
    "{strikes: 5, action: suspend, for: 2s}",
)


def user_record(gw: Gateway, pseudonym: str) -> UserRecord | None:
    async def fetch() -> UserRecord | None:
        store = open_store(gw.state.settings.store)
        await store.open()
        try:
            return await store.users.get(pseudonym)
        finally:
            await store.close()

    return asyncio.run(fetch())


def pseudonym(gw: Gateway, raw: str) -> str:
    assert gw.state.pseudonymizer is not None
    return gw.state.pseudonymizer(raw)


def blocked(client: openai.OpenAI, user: str) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=BAD, user=user)
    assert info.value.code == "content_filter"
    return info.value


def fine(client: openai.OpenAI, user: str) -> Mapping[str, str]:
    resp = client.chat.completions.with_raw_response.create(
        model="m", messages=FINE, user=user, extra_headers=mock(content="Once upon a time")
    )
    assert resp.parse().choices[0].message.content == "Once upon a time"
    return resp.headers


def metric(gw: Gateway, action: str) -> float:
    text = httpx.get(f"{gw.base}/metrics").text
    line = f'modgate_enforcement_actions_total{{action="{action}"}} '
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


def test_full_ladder_warn_restrict_suspend_and_expiry(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=LADDER)
    client = gw.openai()
    user = "user-42@example.com"
    incidents = []

    first = blocked(client, user)  # strike 1: the very response that earned it carries the notice
    incidents.append(first.body["modgate"]["incident_id"])  # type: ignore[index]
    assert first.response.headers[STATUS_HEADER] == "warned"
    headers = fine(client, user)
    assert headers[STATUS_HEADER] == "warned"
    assert unquote(headers[NOTICE_HEADER]) == WARNING
    assert headers[NOTICE_HEADER].isascii()

    for _ in range(2):  # strikes 2 and 3: restricted to 3 requests a minute
        incidents.append(blocked(client, user).body["modgate"]["incident_id"])  # type: ignore[index]
    assert fine(client, user)[STATUS_HEADER] == "restricted"  # request 1 of 3 this minute
    for _ in range(2):  # requests 2 and 3; strikes 4 and 5: suspended for 2 s
        incidents.append(blocked(client, user).body["modgate"]["incident_id"])  # type: ignore[index]

    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="m", messages=FINE, user=user)
    assert denied.value.status_code == 403
    assert denied.value.code == "user_suspended"
    until = denied.value.body["modgate"]["until"]  # type: ignore[index]
    assert time.time() < until <= time.time() + 2.5

    # The suspension ends; the five strikes still in the window restrict (3/min, all used).
    time.sleep(max(0.0, until - time.time()) + 0.1)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="m", messages=FINE, user=user)
    assert limited.value.status_code == 429
    assert limited.value.code == "user_restricted"
    assert unquote(limited.value.response.headers[NOTICE_HEADER]) == WARNING

    record = user_record(gw, pseudonym(gw, user))
    assert record is not None and record.status == "suspended" and record.until == until
    assert len(record.strikes) == 5
    assert [e.detail for e in record.history if e.kind == "strike"] == [f"incident {i}" for i in incidents]
    changes = [(e.status, e.detail) for e in record.history if e.kind == "status"]
    assert changes == [
        ("warned", f"1 strikes; incident {incidents[0]}"),
        ("restricted", f"3 strikes; incident {incidents[2]}"),
        ("suspended", f"5 strikes; incident {incidents[4]}"),
    ]
    expected = {"warn": 1, "restrict": 1, "suspend": 1, "rejected_suspended": 1, "rejected_restricted": 1}
    assert {action: metric(gw, action) for action in expected} == expected


def test_restricted_user_is_limited_to_the_rate(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=enforced("{strikes: 1, action: restrict, rate: 2/min}"))
    client = gw.openai()
    blocked(client, "bob")
    assert [fine(client, "bob")[STATUS_HEADER] for _ in range(2)] == ["restricted"] * 2
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="m", messages=FINE, user="bob")
    assert limited.value.code == "user_restricted"
    assert "2 requests per 60 s" in limited.value.message
    assert limited.value.response.headers["retry-after"] == "60"
    fine(client, "carol")  # others are not limited
    assert metric(gw, "rejected_restricted") == 1


def test_expired_suspension_falls_back_and_the_next_strike_renews_it(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=enforced("{strikes: 1, action: warn}", "{strikes: 2, action: suspend, for: 1s}"))
    client = gw.openai()
    blocked(client, "dan")
    blocked(client, "dan")
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="m", messages=FINE, user="dan")
    time.sleep(1.2)
    assert fine(client, "dan")[STATUS_HEADER] == "warned"  # not re-suspended by the same strikes
    blocked(client, "dan")  # strike 3: suspended again
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="m", messages=FINE, user="dan")
    assert denied.value.code == "user_suspended"
    assert metric(gw, "suspend") == 2


SUSPEND_AT_ONCE = enforced("{strikes: 1, action: suspend, for: 1h}")


@pytest.mark.parametrize("kind", ["input-block", "input-refuse", "output-block", "stream-cut"])
def test_the_very_next_request_sees_the_strike(make_gateway: GatewayFactory, kind: str) -> None:
    gw = make_gateway(policy=SUSPEND_AT_ONCE)
    client = gw.openai()
    headers = {"X-Modgate-User": f"eve-{kind}"}
    if kind == "input-block":
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="m", messages=BAD, extra_headers=headers)
        incident_id = info.value.body["modgate"]["incident_id"]  # type: ignore[index]
    elif kind == "input-refuse":
        msg: list[Any] = [{"role": "user", "content": "please refuseword now"}]
        done = client.chat.completions.create(model="m", messages=msg, extra_headers=headers)
        assert done.choices[0].finish_reason == "content_filter"
        incident_id = done.model_extra["modgate"]["incident_id"]  # type: ignore[index]
    elif kind == "output-block":
        done = client.chat.completions.create(
            model="m", messages=FINE, extra_headers={**headers, **mock(content="Sure: zorblax it.")}
        )
        assert done.choices[0].finish_reason == "content_filter"
        incident_id = done.model_extra["modgate"]["incident_id"]  # type: ignore[index]
    else:
        stream = client.chat.completions.create(
            model="m",
            messages=FINE,
            stream=True,
            extra_headers={**headers, **mock(type="sse", deltas=["Here is the ", "zorb", "lax recipe"])},
        )
        chunks = list(stream)
        assert chunks[-1].choices[0].finish_reason == "content_filter"
        incident_id = chunks[-1].model_extra["modgate"]["incident_id"]  # type: ignore[index]
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="m", messages=FINE, extra_headers=headers)
    assert denied.value.code == "user_suspended"
    record = user_record(gw, pseudonym(gw, f"eve-{kind}"))
    assert record is not None
    assert [e.detail for e in record.history if e.kind == "strike"] == [f"incident {incident_id}"]


def test_flag_and_redact_are_not_strikes(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=SUSPEND_AT_ONCE)
    client = gw.openai()
    for text in ("a flagword here", "my secretword is"):
        messages: list[Any] = [{"role": "user", "content": text}]
        client.chat.completions.create(model="m", messages=messages, user="fay")
    assert {i.action for i in gw.incidents()} == {"flag", "redact"}
    fine(client, "fay")
    assert user_record(gw, pseudonym(gw, "fay")) is None


def test_no_user_no_enforcement(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=SUSPEND_AT_ONCE)
    client = gw.openai()
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=BAD)
    assert NOTICE_HEADER not in fine(client, "")  # an empty user is no user
    assert all(i.user is None for i in gw.incidents())


@pytest.mark.parametrize(
    ("key", "body_user", "header_user", "expected"),
    [
        (KEY_SHARED, "body-user", None, "body-user"),
        (KEY_SHARED, None, "header-user", "header-user"),
        (KEY_ALICE, None, None, "alice@example.com"),
        (KEY_ALICE, "body-user", "header-user", "body-user"),
        (KEY_ALICE, None, "header-user", "header-user"),
        (KEY_SHARED, None, None, None),
    ],
)
def test_user_from_body_header_or_key_and_only_the_pseudonym_is_stored(
    make_gateway: GatewayFactory,
    key: str,
    body_user: str | None,
    header_user: str | None,
    expected: str | None,
) -> None:
    gw = make_gateway(policy=SUSPEND_AT_ONCE, config=CONFIG)
    client = gw.openai(api_key=key)
    extra: dict[str, Any] = {"extra_headers": {"X-Modgate-User": header_user} if header_user else {}}
    if body_user:
        extra["user"] = body_user
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=BAD, **extra)
    incident_id = info.value.body["modgate"]["incident_id"]  # type: ignore[index]
    (incident,) = gw.incidents()
    assert incident.id == incident_id
    if expected is None:
        assert incident.user is None
        return
    assert incident.user == Pseudonymizer(SECRET)(expected)  # the configured secret keys it
    stored = json.dumps(incident.to_dict(), ensure_ascii=False)
    for raw in {"body-user", "header-user", "alice@example.com"}:
        assert raw not in stored
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="m", messages=FINE, **extra)


def test_pseudonyms_are_stable_across_restarts(make_gateway: GatewayFactory, tmp_path: Any) -> None:
    store = f"sqlite:///{tmp_path}/shared.db"
    first = make_gateway(policy=SUSPEND_AT_ONCE, store=store)
    blocked(first.openai(), "gina")
    second = make_gateway(policy=SUSPEND_AT_ONCE, store=store)  # a second replica on the same store
    assert pseudonym(second, "gina") == pseudonym(first, "gina")
    with pytest.raises(openai.PermissionDeniedError):
        second.openai().chat.completions.create(model="m", messages=FINE, user="gina")


def test_moderations_are_not_user_turns(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=SUSPEND_AT_ONCE)
    blocked(gw.openai(), "hal")
    resp = httpx.post(
        f"{gw.base}/v1/moderations", json={"input": "zorblax"}, headers={"X-Modgate-User": "hal"}
    )
    assert resp.status_code == 200 and resp.json()["results"][0]["flagged"] is True


def test_store_down_still_enforces_the_decision(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=SUSPEND_AT_ONCE, config=CONFIG, store="redis://127.0.0.1:1/0")
    client = gw.openai(api_key=KEY_ALICE)
    for _ in range(2):  # the strike is lost, the block is not
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="m", messages=BAD)
        assert info.value.code == "content_filter"
    fine(client, "alice")
    text = httpx.get(f"{gw.base}/metrics").text
    assert 'modgate_store_errors_total{operation="strike"} 2.0' in text
    assert 'modgate_store_errors_total{operation="user_check"} 3.0' in text


def test_store_down_at_start_without_a_secret_leaves_users_unidentified(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(policy=SUSPEND_AT_ONCE, store="redis://127.0.0.1:1/0")
    assert gw.state.pseudonymizer is None
    fine(gw.openai(), "ivan")
    blocked(gw.openai(), "ivan")
    assert 'modgate_store_errors_total{operation="pseudonym_secret"}' in httpx.get(f"{gw.base}/metrics").text


@pytest.mark.redis
def test_ladder_on_the_redis_store(make_gateway: GatewayFactory) -> None:
    """Database 11 and the store's own ``modgate:`` prefix; every key is deleted afterwards."""
    url = "redis://127.0.0.1:6379/11"
    user = f"redis-user-{uuid.uuid4().hex}"
    try:
        gw = make_gateway(policy=LADDER, store=url)
        client = gw.openai()
        for _ in range(3):
            blocked(client, user)
        assert fine(client, user)[STATUS_HEADER] == "restricted"
        for _ in range(2):
            blocked(client, user)
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="m", messages=FINE, user=user)
        record = user_record(gw, pseudonym(gw, user))
        assert record is not None and record.status == "suspended" and len(record.strikes) == 5
    finally:
        asyncio.run(_delete_keys(url, "modgate:*"))


async def _delete_keys(url: str, pattern: str) -> None:
    client = aioredis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=pattern)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()

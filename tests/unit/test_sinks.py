"""The report sinks: JSONL files per UTC day, and a signed webhook against a real server."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ReportSettings
from gateway.config import WebhookSink as WebhookSettings
from gateway.records import Delivery
from gateway.report_worker import event_body
from gateway.sinks import JsonlSink, SinkError, WebhookSink, sinks_from
from tests.support.report_stores import report
from tests.support.servers import free_port, serve_in_thread
from tests.support.webhook import WebhookReceiver

SECRET = "whsec-0123456789abcdef"


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def event_ids(path: Path) -> list[str]:
    return [json.loads(line)["event_id"] for line in path.read_text(encoding="utf-8").splitlines()]


def event(n: int = 1, sent_at: str = "2025-03-04T23:59:59.500Z", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"evt_{n:04d}",
        "type": "report.queued",
        "report": report(n).to_dict(),
        "sent_at": sent_at,
        **fields,
    }


# --- the event body ----------------------------------------------------------------------------


def test_event_body_carries_the_report_and_a_utc_time() -> None:
    queued = report(3)
    body = event_body(Delivery("1-0", "evt_x", "report.confirmed", queued, attempts=2))
    assert set(body) == {"event_id", "type", "report", "sent_at"}
    assert (body["event_id"], body["type"], body["report"]) == ("evt_x", "report.confirmed", queued.to_dict())
    sent = datetime.fromisoformat(body["sent_at"])
    assert body["sent_at"].endswith("Z") and abs(sent.timestamp() - time.time()) < 5
    assert json.loads(json.dumps(body)) == body


# --- JSONL -----------------------------------------------------------------------------------


async def test_jsonl_appends_one_line_per_event(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "out")
    first, second = event(1), event(2, excerpt='中文 "quoted"\nnew line')
    await sink.deliver(first)
    await sink.deliver(second)
    [path] = (tmp_path / "out").iterdir()
    assert path.name == "reports-2025-03-04.jsonl"
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 2
    assert [json.loads(line) for line in text.splitlines()] == [first, second]
    assert "中文" in text  # readable UTF-8, not \\u escapes


async def test_jsonl_splits_by_utc_day(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    await sink.deliver(event(1, sent_at="2025-03-04T23:59:59.999Z"))
    await sink.deliver(event(2, sent_at="2025-03-05T07:30:00+08:00"))  # 23:30 UTC on the 4th
    await sink.deliver(event(3, sent_at="2025-03-05T00:00:00.000Z"))
    assert names(tmp_path) == ["reports-2025-03-04.jsonl", "reports-2025-03-05.jsonl"]
    assert event_ids(tmp_path / "reports-2025-03-04.jsonl") == ["evt_0001", "evt_0002"]
    assert event_ids(tmp_path / "reports-2025-03-05.jsonl") == ["evt_0003"]


async def test_jsonl_without_a_time_uses_today(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    await sink.deliver(event(1, sent_at="not a time"))
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert names(tmp_path) == [f"reports-{today}.jsonl"]


async def test_jsonl_failure_is_a_sink_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(SinkError, match="jsonl: cannot write"):
        await JsonlSink(blocker).deliver(event())


# --- webhook ---------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[WebhookReceiver, str]]:
    hook = WebhookReceiver(fail_first=1, fail_status=503)
    with serve_in_thread(hook) as base:
        yield hook, f"{base}/modgate/reports"
    hook.release()


def webhook(url: str, **fields: Any) -> WebhookSink:
    return WebhookSink(WebhookSettings(url=url, secret=SECRET, **fields))


async def test_webhook_signs_the_exact_body(receiver: tuple[WebhookReceiver, str]) -> None:
    hook, url = receiver
    sink = webhook(url, headers={"Authorization": "Bearer abc"})
    sent = event(7, excerpt="中文")
    try:
        with pytest.raises(SinkError, match="webhook: HTTP 503"):
            await sink.deliver(sent)
        await sink.deliver(sent)
    finally:
        await sink.aclose()
    assert [r.status for r in hook.received] == [503, 200]
    for seen in hook.received:
        assert seen.event == sent
        expected = hmac.new(SECRET.encode(), seen.body, hashlib.sha256).hexdigest()
        assert seen.headers["x-modgate-signature"] == f"sha256={expected}"
        assert seen.headers["idempotency-key"] == "evt_0007"
        assert seen.headers["content-type"] == "application/json"
        assert seen.headers["authorization"] == "Bearer abc"
        assert abs(int(seen.headers["x-modgate-timestamp"]) - time.time()) < 60
    assert not hook.received[0].signed_with("another-secret-0123")


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_webhook_any_2xx_is_success(status: int) -> None:
    hook = WebhookReceiver(fail_first=1, fail_status=status)
    with serve_in_thread(hook) as base:
        sink = webhook(f"{base}/hook")
        await sink.deliver(event())
        await sink.aclose()
    assert [r.status for r in hook.received] == [status]


@pytest.mark.parametrize("status", [301, 400, 409, 429, 500])
async def test_webhook_other_statuses_fail(status: int) -> None:
    hook = WebhookReceiver(fail_first=1, fail_status=status)
    with serve_in_thread(hook) as base:
        sink = webhook(f"{base}/hook")
        with pytest.raises(SinkError, match=f"HTTP {status}"):
            await sink.deliver(event())
        await sink.aclose()


async def test_webhook_connection_refused_fails() -> None:
    sink = webhook(f"http://127.0.0.1:{free_port()}/hook")
    with pytest.raises(SinkError, match="webhook: ConnectError"):
        await sink.deliver(event())
    await sink.aclose()


async def test_webhook_timeout_fails() -> None:
    hook = WebhookReceiver(stall_first=1)
    with serve_in_thread(hook) as base:
        sink = webhook(f"{base}/hook", timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(SinkError, match="webhook: ReadTimeout"):
            await sink.deliver(event())
        assert time.monotonic() - started < 5
        hook.release()
        await sink.aclose()


async def test_sinks_from_settings(tmp_path: Path) -> None:
    assert sinks_from(ReportSettings()) == []
    settings = ReportSettings(
        jsonl_dir=Path("reports"), webhook=WebhookSettings(url="https://example.org/h", secret=SECRET)
    )
    jsonl, hook = sinks_from(settings, base_dir=tmp_path)
    assert isinstance(jsonl, JsonlSink) and jsonl.folder == tmp_path / "reports"
    assert isinstance(hook, WebhookSink) and hook.name == "webhook"
    await hook.aclose()

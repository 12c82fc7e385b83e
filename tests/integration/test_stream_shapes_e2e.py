"""Stream shapes through the gateway with the official ``openai`` client, in both modes:
``n > 1`` choices guarded one by one, ``include_usage``, and async mode's retraction."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import TEST_POLICY, Gateway, Upstream, mock

MSG = [{"role": "user", "content": "Tell me something."}]
MODES = ["hold", "async"]


@pytest.fixture(params=MODES)
def gw(request: pytest.FixtureRequest, make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway(policy=TEST_POLICY.replace("mode: hold", f"mode: {request.param}"))


def _chunks(gateway: Gateway, test_id: str, **kwargs: Any) -> list[Any]:
    script = kwargs.pop("script")
    stream = gateway.openai().chat.completions.create(
        model="m", messages=MSG, stream=True,
        extra_headers={**mock(type="sse", **script), "x-test-id": test_id}, **kwargs,
    )  # fmt: skip
    return list(stream)


def _text(chunks: list[Any], index: int) -> str:
    return "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices if c.index == index)


def _finish(chunks: list[Any], index: int) -> str | None:
    return next(
        (c.finish_reason for chunk in chunks for c in chunk.choices if c.index == index and c.finish_reason),
        None,
    )


@pytest.mark.parametrize(
    ("bad", "term"),
    [(["Step: zor", "blax ", "now."], "zorblax"), (["做法：炸药", "配方", "如下。"], "炸药配方")],
    ids=["en", "zh"],
)
def test_a_cut_of_one_choice_ends_that_choice_only(
    gw: Gateway, upstream: Upstream, bad: list, term: str
) -> None:
    good = ["Hello ", "there, ", "friend."]
    test_id = f"n2-{term.encode().hex()}-{id(gw)}"
    chunks = _chunks(gw, test_id, n=2, script={"by_choice": [good, bad], "delay_ms": 5})
    assert _text(chunks, 0) == "Hello there, friend."
    assert term not in _text(chunks, 1)
    assert (_finish(chunks, 0), _finish(chunks, 1)) == ("stop", "content_filter")
    notes = [c.model_extra["modgate"] for c in chunks if c.model_extra and "modgate" in c.model_extra]
    assert len(notes) == 1 and "A.1.d" in notes[0]["risks"]
    time.sleep(0.1)
    assert upstream.app.by_test_id(test_id)[0].stream_state == "done"  # choice 0 was still generating


def test_when_every_choice_is_cut_generation_stops(gw: Gateway, upstream: Upstream) -> None:
    test_id = f"n2-all-{id(gw)}"
    rows = [["a ", "zor", "blax ", *["more "] * 100], ["b ", "炸药", "配方", *["更多"] * 100]]
    chunks = _chunks(gw, test_id, n=2, script={"by_choice": rows, "delay_ms": 5})
    assert {_finish(chunks, 0), _finish(chunks, 1)} == {"content_filter"}
    time.sleep(0.2)
    seen = upstream.app.by_test_id(test_id)[0]
    assert seen.stream_state == "disconnected" and seen.sent_deltas < 20


def test_usage_chunk_arrives_also_after_a_choice_was_cut(gw: Gateway) -> None:
    options = {"include_usage": True}
    chunks = _chunks(gw, f"usage-{id(gw)}", stream_options=options, script={"deltas": ["你好，", "世界。"]})
    assert _text(chunks, 0) == "你好，世界。" and chunks[-1].usage.total_tokens == 12
    rows = [["fine ", "words", "."], ["zor", "blax ", "x"]]
    chunks = _chunks(gw, f"usage-cut-{id(gw)}", n=2, stream_options=options, script={"by_choice": rows})
    assert _text(chunks, 0) == "fine words."
    assert _finish(chunks, 1) == "content_filter" and chunks[-1].usage.total_tokens == 12


def test_async_cut_names_what_to_retract(make_gateway: Callable[..., Gateway], upstream: Upstream) -> None:
    gateway = make_gateway(policy=TEST_POLICY.replace("mode: hold", "mode: async"))
    chunks = _chunks(
        gateway, "retract", script={"deltas": ["Here is ", "zor", "blax", " more"], "delay_ms": 5}
    )
    shown = _text(chunks, 0)
    assert shown.startswith("Here is zor") and "zorblax" not in shown
    note = chunks[-1].model_extra["modgate"]
    assert note["retract"] == {"choice": 0, "channel": "content", "start": 8, "end": 11}
    incident = next(i for i in gateway.incidents() if i.id == note["incident_id"])
    assert incident.exposed_chars == 3

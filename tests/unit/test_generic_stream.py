"""JSONPath-like selectors (gateway.jsonpath) and the stream guard over a made-up JSON API's
events (gateway.stream.generic), as JSON lines and as SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from gateway.jsonpath import Selector, set_path
from gateway.policy import Policy
from gateway.policy_loader import load_policy
from gateway.screening import Decision, Segment
from gateway.stream.generic import GenericShape, fill
from gateway.stream.guard import StreamGuard
from gateway.stream.sse import SSEParser

# --- selectors -------------------------------------------------------------------------------

DOC = {
    "input": {"history": [{"role": "user", "text": "你好"}, {"role": "bot", "text": "hello"}], "q": "why?"},
    "meta": {"a.b": "dotted", "n": 3},
}


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("$.input.q", [(("input", "q"), "why?")]),
        (
            "$.input.history[*].text",
            [(("input", "history", 0, "text"), "你好"), (("input", "history", 1, "text"), "hello")],
        ),
        ("$.input.history[-1].text", [(("input", "history", 1, "text"), "hello")]),
        ("$.input.history[5].text", []),
        ('$.meta["a.b"]', [(("meta", "a.b"), "dotted")]),
        ("$.meta.n", []),  # not a string
        ("$.nothing.here", []),
        ("$.input.*", [(("input", "q"), "why?")]),
    ],
)
def test_selectors_find_texts(source: str, found: list[Any]) -> None:
    assert Selector.parse(source).texts(DOC) == found


@pytest.mark.parametrize("bad", ["input.q", "$.input..q", "$[abc]", "$.in put"])
def test_bad_selectors_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="selector"):
        Selector.parse(bad)


def test_set_path_writes_back() -> None:
    doc = json.loads(json.dumps(DOC))
    [(path, _)] = Selector.parse("$.input.history[0].text").texts(doc)
    set_path(doc, path, "[REDACTED]")
    assert doc["input"]["history"][0]["text"] == "[REDACTED]"


def test_fill_replaces_message_in_strings_only() -> None:
    assert fill({"a": ["{message}!", 1], "b": {"c": "x {message}"}}, "no") == {
        "a": ["no!", 1],
        "b": {"c": "x no"},
    }


# --- the guard over generic events ----------------------------------------------------------------

POLICY = """\
name: generic-stream
extends: default
classifiers:
  guard: null
  terms:
    type: lexicon
    terms:
      A.1.d: ["zorblax", "炸药配方"]
      X.test_redact: ["secretword"]
rules:
  A.1.d: {{input: block, output: block}}
  X.test_redact: {{input: redact, output: redact}}
streaming:
  mode: {mode}
"""


@pytest.fixture(scope="module", params=["hold", "async"])
def policy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Policy:
    path: Path = tmp_path_factory.mktemp("p") / "p.yaml"
    path.write_text(POLICY.format(mode=request.param), encoding="utf-8")
    return load_policy(path)


def event(text: str, *, final: bool = False) -> dict[str, Any]:
    return {"result": {"token": {"text": text}, "seq": 1}, "done": final}


async def run(
    policy: Policy, events: list[dict[str, Any]], *, jsonl: bool
) -> tuple[list[dict[str, Any]], int]:
    shape = GenericShape(
        Selector.parse("$.result.token.text"),
        jsonl=jsonl,
        done_marker=None if jsonl else "[DONE]",
        end=Selector.parse("$.done"),
        cut_event={"error": {"code": "moderated", "message": "{message}"}},
    )
    closes: list[int] = []

    async def upstream() -> AsyncGenerator[bytes, None]:
        for e in events:
            line = json.dumps(e, ensure_ascii=False).encode()
            yield line + b"\n" if jsonl else b"data: " + line + b"\n\n"
        if not jsonl:
            yield b"data: [DONE]\n\n"

    async def record(d: Decision, s: list[Segment], exposed: int, offsets: list[list[int]]) -> str:
        return "inc_1"

    async def close() -> None:
        closes.append(1)

    out = b"".join([b async for b in StreamGuard(policy, record, close, shape=shape).run(upstream())])
    if jsonl:
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        return lines, len(closes)
    events_out = SSEParser().feed(out)
    assert events_out[-1].data == "[DONE]"
    return [json.loads(e.data) for e in events_out[:-1] if e.data], len(closes)


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["result"]["token"]["text"] for e in events if "result" in e)


@pytest.mark.parametrize("jsonl", [True, False], ids=["jsonl", "sse"])
@pytest.mark.parametrize("pieces", [["Hello ", "wor", "ld."], ["你好，", "世界。"]], ids=["en", "zh"])
async def test_benign_events_arrive_whole(policy: Policy, jsonl: bool, pieces: list[str]) -> None:
    events = [event(p) for p in pieces] + [event("", final=True)]
    out, closes = await run(policy, events, jsonl=jsonl)
    assert text_of(out) == "".join(pieces)
    assert out[-1]["done"] is True and closes == 0
    assert all(e["result"]["seq"] == 1 for e in out)  # the rest of each event is untouched


@pytest.mark.parametrize("jsonl", [True, False], ids=["jsonl", "sse"])
@pytest.mark.parametrize("pieces", [["It is zor", "bl", "ax!"], ["这是炸药", "配方"]], ids=["en", "zh"])
async def test_split_term_is_cut_with_the_configured_event(
    policy: Policy, jsonl: bool, pieces: list[str]
) -> None:
    events = [event("Fine. "), *(event(p) for p in pieces), event(" more"), event("", final=True)]
    out, closes = await run(policy, events, jsonl=jsonl)
    final = out[-1]
    assert final["error"]["code"] == "moderated"
    assert final["error"]["message"] == policy.spec.refusal.message
    assert final["modgate"]["action"] == "block" and "A.1.d" in final["modgate"]["risks"]
    assert closes == 1
    shown = text_of(out)
    term = "zorblax" if "zor" in pieces[0] else "炸药配方"
    if policy.spec.streaming.mode == "hold":
        assert term[:2] not in shown
    else:
        retract = final["modgate"]["retract"]
        assert shown[retract["start"] :].startswith(
            pieces[0][len("It is ") :] if "zor" in pieces[0] else "炸药"
        )


async def test_redaction_written_back_at_the_delta(policy: Policy) -> None:
    events = [event("the secret"), event("word and more"), event("", final=True)]
    out, _ = await run(policy, events, jsonl=True)
    if policy.spec.streaming.mode == "hold":
        assert text_of(out) == "the [REDACTED] and more"


async def test_jsonl_framing_joins_lines_split_across_reads() -> None:
    from gateway.errors import UpstreamUnavailable
    from gateway.stream.sse import jsonl_batches

    async def reads(*parts: bytes) -> AsyncGenerator[bytes, None]:
        for part in parts:
            yield part

    batches = [b async for b in jsonl_batches(reads(b'{"a": "he', b'llo"}\r\n\n{"a":', ' "世界"}'.encode()))]
    assert [[e.data for e in batch] for batch in batches] == [['{"a": "hello"}'], ['{"a": "世界"}']]
    assert batches[0][0].raw == b'{"a": "hello"}\n'
    with pytest.raises(UpstreamUnavailable, match="not UTF-8"):
        [b async for b in jsonl_batches(reads(b'{"a": "\xff"}\n'))]

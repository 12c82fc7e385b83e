"""Tests for gateway.labels: the GB 45438 metadata, the explicit label's placement, bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config import GatewayConfig
from gateway.duties import ExplicitLabel, LabelingSettings
from gateway.labels import (
    Labeler,
    label_completion,
    labeled,
    labeled_body,
    labeler_for,
    must_be_json,
    with_aigc,
)
from gateway.policy_loader import load_policy

KEYS = ["Label", "ContentProducer", "ProduceID", "ReservedCode1", "ContentPropagator", "PropagateID"]
KEYS.append("ReservedCode2")
END = ExplicitLabel(text="【AI生成】", position="end")
START = ExplicitLabel(text="【AI生成】", position="start")


def _labeler(provider: str = "modgate", **settings: Any) -> Labeler:
    return Labeler(provider, LabelingSettings(**settings), "0123456789abcdef")


def _completion(*messages: dict[str, Any]) -> dict[str, Any]:
    choices = [{"index": i, "message": m, "finish_reason": "stop"} for i, m in enumerate(messages)]
    return {"id": "chatcmpl-x", "object": "chat.completion", "choices": choices}


# --- implicit label --------------------------------------------------------------------------


def test_metadata_has_the_standard_fields_in_order() -> None:
    raw = _labeler("Example AI").metadata("chatcmpl-42", "req_7")
    value = json.loads(raw)
    assert list(value) == ["AIGC"]
    assert list(value["AIGC"]) == KEYS
    assert value["AIGC"] == {
        "Label": "1",
        "ContentProducer": "Example AI",
        "ProduceID": "chatcmpl-42",
        "ReservedCode1": "0123456789abcdef",
        "ContentPropagator": "Example AI",
        "PropagateID": "req_7",
        "ReservedCode2": "",
    }
    assert b" " not in raw.replace(b"Example AI", b"")  # compact: no separators' spaces


@pytest.mark.parametrize("provider", ["示例科技有限公司", 'quote " and \\ back', "tab\tand\nnewline", "é"])
def test_metadata_is_an_ascii_header_value_for_any_provider(provider: str) -> None:
    raw = _labeler(provider).metadata("id-中", "req_1")
    assert raw.isascii()
    assert all(0x20 <= b < 0x7F for b in raw)  # no control characters: a valid header value
    value = json.loads(raw)["AIGC"]
    assert value["ContentProducer"] == value["ContentPropagator"] == provider
    assert value["ProduceID"] == "id-中"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_provider_is_refused(blank: str) -> None:
    with pytest.raises(ValueError, match="provider"):
        GatewayConfig(provider=blank)
    assert GatewayConfig().provider == "modgate"
    assert GatewayConfig(provider=" 示例科技 ").provider == "示例科技"


def test_labeler_is_made_once_per_policy_version(tmp_path: Path) -> None:
    policy = load_policy(None)
    first = labeler_for("acme", policy)
    assert labeler_for("acme", policy) is first
    assert labeler_for("other", policy) is not first
    assert first.policy_version == policy.version and first.implicit is True
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nextends: default\nlabeling: {implicit: false}\n", encoding="utf-8")
    changed = labeler_for("acme", load_policy(path))
    assert changed.implicit is False and changed.policy_version != policy.version


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"a":1}', b' {"a": {"b": {}}, "c": [1, {}]} \n', b'{"s":"ends with {"}', b"{ }"],
)
def test_with_aigc_appends_the_field(body: bytes) -> None:
    metadata = _labeler().metadata("p", "r")
    out = with_aigc(body, metadata)
    assert json.loads(out) == {**json.loads(body), "aigc": json.loads(metadata)}


def test_with_aigc_refuses_what_is_not_an_object() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        with_aigc(b"[1, 2]", b"{}")


# --- explicit label --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label", "expected"),
    [
        ("Hello.", END, "Hello.\n【AI生成】"),
        ("Hello.\n", END, "Hello.\n【AI生成】"),
        ("Hello.", START, "【AI生成】\nHello."),
        ("\nHello.", START, "【AI生成】\nHello."),
        ("", END, ""),
        ("", START, ""),
    ],
)
def test_labeled_places_the_text(text: str, label: ExplicitLabel, expected: str) -> None:
    assert labeled(text, label) == expected


@pytest.mark.parametrize(
    ("response_format", "json_only"),
    [
        ({"type": "json_object"}, True),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, True),
        ({"type": "text"}, False),
        (None, False),
        ("json_object", False),  # not the API's shape: the upstream will refuse it anyway
    ],
)
def test_json_answers_get_no_explicit_label(response_format: Any, json_only: bool) -> None:
    assert must_be_json(response_format) is json_only
    labeler = _labeler(explicit={"text": "AI", "position": "end"})
    assert (labeler.explicit(response_format) is None) is json_only
    assert _labeler().explicit(None) is None  # none configured


def test_label_completion_touches_only_content() -> None:
    tool_call: dict[str, Any] = {
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a": "b"}'},
    }
    response = _completion(
        {"role": "assistant", "content": "Answer one.", "reasoning_content": "thinking"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "assistant", "content": "答案二。", "tool_calls": [tool_call]},
        {"role": "assistant", "content": ""},
    )
    assert label_completion(response, END) is True
    messages = [c["message"] for c in response["choices"]]
    assert messages[0] == {
        "role": "assistant",
        "content": "Answer one.\n【AI生成】",
        "reasoning_content": "thinking",
    }
    assert messages[1]["content"] is None
    assert messages[2]["content"] == "答案二。\n【AI生成】"
    assert [m.get("tool_calls") for m in messages[1:3]] == [[tool_call], [tool_call]]
    assert tool_call["function"]["arguments"] == '{"a": "b"}'
    assert messages[3]["content"] == ""


def test_label_completion_without_text_changes_nothing() -> None:
    response = _completion({"role": "assistant", "content": None, "tool_calls": []})
    assert label_completion(response, START) is False


# --- whole bodies ----------------------------------------------------------------------------


def test_unchanged_body_keeps_its_bytes() -> None:
    raw = b'{"id": "chatcmpl-x",  "weird":   "spacing", "choices": []}'
    out, header = labeled_body(_labeler(), None, orjson.loads(raw), raw, "req_1")
    assert header is not None and out.startswith(raw[:-1])  # spliced, not re-encoded
    assert json.loads(out)["aigc"] == json.loads(header)
    assert json.loads(header)["AIGC"]["ProduceID"] == "chatcmpl-x"


def test_explicit_label_re_encodes_with_both_labels() -> None:
    response = _completion({"role": "assistant", "content": "Hi"})
    raw = orjson.dumps(response)
    out, header = labeled_body(_labeler(), START, response, raw, "req_1")
    body = json.loads(out)
    assert body["choices"][0]["message"]["content"] == "【AI生成】\nHi"
    assert header is not None and body["aigc"] == json.loads(header)


def test_upstream_aigc_field_is_replaced_not_doubled() -> None:
    raw = b'{"id": "chatcmpl-x", "aigc": {"AIGC": {"ContentProducer": "someone else"}}}'
    out, _ = labeled_body(_labeler("us"), None, orjson.loads(raw), raw, "req_1")
    assert out.count(b'"aigc"') == 1
    assert json.loads(out)["aigc"]["AIGC"]["ContentProducer"] == "us"


@pytest.mark.parametrize("produce_id", [None, "", 42])
def test_produce_id_falls_back_to_the_request_id(produce_id: Any) -> None:
    response = {"id": produce_id, "choices": []}
    _, header = labeled_body(_labeler(), None, response, None, "req_fallback")
    assert header is not None and json.loads(header)["AIGC"]["ProduceID"] == "req_fallback"


def test_implicit_off_adds_no_field_and_no_header() -> None:
    raw = b'{"id": "x", "choices": []}'
    out, header = labeled_body(_labeler(implicit=False), None, orjson.loads(raw), raw, "r")
    assert header is None and out is raw
    response = _completion({"role": "assistant", "content": "Hi"})
    out, header = labeled_body(_labeler(implicit=False), END, response, None, "r")
    assert header is None and json.loads(out) == {**response}
    assert "aigc" not in json.loads(out) and response["choices"][0]["message"]["content"] == "Hi\n【AI生成】"

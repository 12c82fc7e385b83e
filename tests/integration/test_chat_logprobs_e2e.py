"""Chat ``logprobs`` through the gateway, with the official openai client: they spell the tokens
of the text they came with, so they must never carry text the gateway stopped, masked or is
still holding back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import TEST_POLICY, Gateway, GatewayFactory, mock


@pytest.fixture(params=["hold", "async"])
def streaming(request: pytest.FixtureRequest, make_gateway: GatewayFactory) -> Gateway:
    return make_gateway(policy=TEST_POLICY.replace("mode: hold", f"mode: {request.param}"))


def _create(gateway: Gateway, **script: Any) -> Any:
    return gateway.openai().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Go on."}],
        logprobs=True,
        extra_headers=mock(type="json", logprobs=True, **script),
    )


def _tokens(choice: Any) -> str:
    return "".join(t.token for t in choice.logprobs.content)


@pytest.mark.parametrize("text", ["A fine answer.", "一个好的回答。"], ids=["en", "zh"])
def test_untouched_choice_keeps_its_logprobs(gateway: Gateway, text: str) -> None:
    choice = _create(gateway, content=text).choices[0]
    assert choice.message.content == text
    assert choice.logprobs is not None and _tokens(choice) == text


@pytest.mark.parametrize(
    ("text", "term", "finish"),
    [
        ("Step one: zorblax.", "zorblax", "content_filter"),
        ("第一步：炸药配方。", "炸药配方", "content_filter"),
        ("the secretword is here", "secretword", "stop"),
        ("密码是机密词", "机密词", "stop"),
    ],
    ids=["block-en", "block-zh", "redact-en", "redact-zh"],
)
def test_changed_choice_loses_its_logprobs(gateway: Gateway, text: str, term: str, finish: str) -> None:
    completion = _create(gateway, content=text, n=2)
    for choice in completion.choices:
        assert term not in (choice.message.content or "")
        assert choice.finish_reason == finish
        assert choice.logprobs is None
    assert term not in completion.model_dump_json()


def _stream(gateway: Gateway, deltas: list[str]) -> list[dict[str, Any]]:
    stream = gateway.openai().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Go on."}],
        logprobs=True,
        stream=True,
        extra_headers=mock(type="sse", deltas=deltas, logprobs=True, delay_ms=60),
    )
    return [chunk.model_dump() for chunk in stream]


def _spelled(choice: dict[str, Any]) -> str:
    return "".join(t["token"] for t in (choice.get("logprobs") or {}).get("content") or ())


@pytest.mark.parametrize(
    "deltas",
    [["Hello. ", "The zor", "ro is a dance."], ["你好。", "这是炸药", "包装的比喻。"]],
    ids=["en", "zh"],
)
def test_streamed_logprobs_spell_only_the_text_beside_them(streaming: Gateway, deltas: list[str]) -> None:
    """A held tail ("zor" could start a listed term) goes out later, in another chunk: the
    logprobs of the chunk it came in would show it early."""
    chunks = _stream(streaming, deltas)
    text = ""
    for chunk in chunks:
        for choice in chunk["choices"]:
            content = choice["delta"].get("content") or ""
            if choice.get("logprobs") is not None:
                assert _spelled(choice) == content
            text += content
    assert text == "".join(deltas)
    assert any(c.get("logprobs") for chunk in chunks for c in chunk["choices"])  # untouched ones keep them


@pytest.mark.parametrize(
    ("deltas", "term"),
    [(["Step one: zorbl", "ax now."], "zorbl"), (["第一步：炸药配", "方如下。"], "炸药配")],
    ids=["en", "zh"],
)
def test_cut_stream_shows_no_part_of_the_term_in_logprobs(
    gateway: Gateway, deltas: list[str], term: str
) -> None:
    """The first chunk's text goes out without its tail, which could start a term (it does)."""
    chunks = _stream(gateway, deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert term not in json.dumps(chunks, ensure_ascii=False)

"""OpenAI legacy completions streams (``POST /v1/completions``) as the stream guard sees them.

A chunk is ``{"object": "text_completion", "choices": [{"index", "text", "finish_reason",
"logprobs"}]}``: a chat chunk in other words, whose choices carry ``text`` where chat has
``delta.content``. The shape reads every chunk through that view and writes the result back,
so held text, redaction, ``n > 1``, the usage chunk, cuts (the refusal text,
``finish_reason: "content_filter"``, the ``modgate`` object and ``retract``) and the explicit
label are chat's own code (``chunks.py``, ``labeling.py``). One channel per choice:
``(choice index, "content", -1)``.

``logprobs`` name the tokens of the text their chunk carried upstream. A choice whose text the
guard changed (held, masked, released later) gets ``logprobs: null``: they would spell text the
client was not given there.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.stream.shape import OpenAIChatShape
from gateway.stream.sse import encode_data

__all__ = ["CompletionsShape", "as_chat", "as_completion"]

Chunk = dict[str, Any]


class CompletionsShape(OpenAIChatShape):
    """``text_completion`` chunks, ending with ``data: [DONE]``."""

    kind = "text_completion"

    def view(self, chunk: Chunk) -> Chunk:
        return as_chat(chunk)

    def write(self, chunk: Chunk, source: Chunk | None = None) -> bytes:
        return encode_data(orjson.dumps(as_completion(chunk, source)))


def _choices(chunk: Chunk | None) -> list[Any]:
    choices = chunk.get("choices") if chunk is not None else None
    return choices if isinstance(choices, list) else []


def as_chat(chunk: Chunk) -> Chunk:
    """The chunk with each choice's ``text`` as ``delta.content``."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return chunk
    return {**chunk, "choices": [_chat_choice(c) for c in choices]}


def _chat_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return choice
    text = choice.get("text")
    out = {k: v for k, v in choice.items() if k != "text"}
    out["delta"] = {"content": text} if isinstance(text, str) and text else {}
    return out


def as_completion(chunk: Chunk, source: Chunk | None = None) -> Chunk:
    """A chat view (rewritten, or made by the gateway) back as a ``text_completion`` chunk;
    ``logprobs`` stay only on choices whose text is what ``source`` carried."""
    if "choices" not in chunk:
        return chunk
    came = {int(c.get("index") or 0): c.get("text") for c in _choices(source) if isinstance(c, dict)}
    return {**chunk, "choices": [_completion_choice(c, came) for c in _choices(chunk)]}


def _completion_choice(choice: Any, came: dict[int, Any]) -> Any:
    if not isinstance(choice, dict):
        return choice
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else None
    out = {k: v for k, v in choice.items() if k != "delta"}
    out["text"] = text if isinstance(text, str) else ""
    index = int(out.get("index") or 0)
    if came.get(index, "") != out["text"] or "logprobs" not in out:
        out["logprobs"] = None
    return out

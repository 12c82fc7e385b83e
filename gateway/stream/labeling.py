"""The explicit label in a streamed chat completion: a stage over the chunks the guard sends.

It sees each outgoing chunk after the guard has decided what text to release, so the label
never delays text, is never screened, and never shifts incident offsets. Per choice:

* ``start``: an extra chunk with ``{"content": label}`` right before the first chunk that
  carries content for that choice;
* ``end``: an extra chunk with ``{"content": label}`` right before the chunk that finishes the
  choice; when that finishing delta itself carries the choice's last text (held text is
  released with the finish), the label is appended to that text instead, so it still comes
  after all of it. A stream that ends without a finish gets the label before ``[DONE]``.

Only ``content`` counts: a choice that is a pure tool call gets no label, and tool-call
arguments, reasoning and refusal fields are never touched. After a cut, the canned reply in
the final chunk is labelled like any other answer (see ``gateway/labels.py``).

Legacy completions stream the same chunks in their own shape: ``write`` turns each label
chunk into one (``gateway/stream/completions.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.duties import ExplicitLabel
from gateway.labels import end_piece, start_piece
from gateway.stream.sse import encode_data

__all__ = ["StreamLabel"]


def _sse(chunk: dict[str, Any]) -> bytes:
    return encode_data(orjson.dumps(chunk))


def _content(choice: Any) -> str:
    delta = choice.get("delta") if isinstance(choice, dict) else None
    text = delta.get("content") if isinstance(delta, dict) else None
    return text if isinstance(text, str) else ""


@dataclass
class StreamLabel:
    label: ExplicitLabel
    #: Choices whose label was sent.
    done: set[int] = field(default_factory=set)
    #: The last character of content sent per choice (for ``end``: the separator depends on it).
    last: dict[int, str] = field(default_factory=dict)
    #: A label chunk (a ``chat.completion.chunk``) as the client gets it.
    write: Callable[[dict[str, Any]], bytes] = _sse

    def before(
        self, chunk: dict[str, Any], template: Mapping[str, Any]
    ) -> tuple[bytes, dict[str, Any] | None]:
        """The label events to send before ``chunk``, and ``chunk`` rewritten when the label
        went into it (else None: send it as it was)."""
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return b"", None
        if self.label.position == "start":
            return self._starts(choices, template), None
        return self._ends(chunk, choices, template)

    def _starts(self, choices: list[Any], template: Mapping[str, Any]) -> bytes:
        pieces = {}
        for choice in choices:
            idx = int(choice.get("index") or 0) if isinstance(choice, dict) else 0
            if idx not in self.done and (text := _content(choice)):
                self.done.add(idx)
                pieces[idx] = start_piece(self.label, text)
        return self._label_chunk(template, pieces)

    def _ends(
        self, chunk: dict[str, Any], choices: list[Any], template: Mapping[str, Any]
    ) -> tuple[bytes, dict[str, Any] | None]:
        pieces: dict[int, str] = {}
        inside: dict[int, str] = {}
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            idx = int(choice.get("index") or 0)
            if text := _content(choice):
                self.last[idx] = text[-1]
            if choice.get("finish_reason") and idx in self.last and idx not in self.done:
                self.done.add(idx)
                (inside if text else pieces)[idx] = end_piece(self.label, self.last[idx])
        rewritten = None
        if inside:
            rewritten = {**chunk, "choices": [_append(c, inside) for c in choices]}
        return self._label_chunk(template, pieces), rewritten

    def flush(self, template: Mapping[str, Any]) -> bytes:
        """``end``: the label for choices that had content but never finished."""
        if self.label.position != "end":
            return b""
        pieces = {i: end_piece(self.label, c) for i, c in self.last.items() if i not in self.done}
        self.done.update(pieces)
        return self._label_chunk(template, pieces)

    def into_cut(self, final: dict[str, Any]) -> None:
        """Label the canned reply in the final chunk of a cut, in place."""
        for choice in final.get("choices") or ():
            idx = int(choice.get("index") or 0)
            text = _content(choice)
            if not text or idx in self.done:
                continue
            self.done.add(idx)
            if self.label.position == "start":
                choice["delta"] = {**choice["delta"], "content": start_piece(self.label, text) + text}
            else:
                choice["delta"] = {**choice["delta"], "content": text + end_piece(self.label, text)}

    def _label_chunk(self, template: Mapping[str, Any], pieces: Mapping[int, str]) -> bytes:
        if not pieces:
            return b""
        choices = [
            {"index": i, "delta": {"content": t}, "finish_reason": None} for i, t in sorted(pieces.items())
        ]
        return self.write({**template, "choices": choices})


def _append(choice: Any, pieces: Mapping[int, str]) -> Any:
    if not isinstance(choice, dict) or (idx := int(choice.get("index") or 0)) not in pieces:
        return choice
    return {**choice, "delta": {**choice["delta"], "content": _content(choice) + pieces[idx]}}

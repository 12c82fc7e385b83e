"""Labels on generated content (Interim Measures Art. 12; GB 45438-2025), driven by the
policy's ``labeling`` section and the gateway config's ``provider``.

**Implicit label** (GB 45438-2025 Annex E metadata): every chat-completions response that
carries generated content -- plain or streamed, the gateway's own canned refusals included --
gets the header ``x-aigc-label`` holding compact, ASCII-only JSON (non-ASCII escaped as
``\\uXXXX``, so any provider name is a valid header value)::

    {"AIGC":{"Label":"1","ContentProducer":P,"ProduceID":ID,"ReservedCode1":V,
             "ContentPropagator":P,"PropagateID":RID,"ReservedCode2":""}}

* ``Label`` "1": the content is AI-generated (the standard's "2" and "3" are for content
  only possibly or suspected to be generated, which a generating service never is).
* ``ContentProducer`` and ``ContentPropagator``: the config's ``provider`` (never empty): the
  service that produces the content is also the one that delivers it to the user.
* ``ProduceID``: the completion's ``id`` in plain responses; in streams, whose headers leave
  before the first chunk names an id, the request id.
* ``ReservedCode1``: the version (content hash) of the policy that screened the content, so a
  labelled text can be traced to the rules in force. It is the same for plain and streamed
  answers (a digest of the text could not be in a stream's headers).
* ``PropagateID``: the request id (``x-request-id``); ``ReservedCode2`` is left empty.

Plain JSON bodies carry the same object as a top-level ``aigc`` field. Error responses carry
no label: they hold no generated content.

**Explicit label**: the policy's text, added to each choice's generated assistant text, at the
start (label, newline, text) or the end (text, newline, label; no newline when the text already
ends with one). Streams get it as an extra content delta (see ``gateway/stream/labeling.py``).
It never goes into tool-call arguments, reasoning or refusal fields, into choices without
text (pure tool calls), nor into responses that must be JSON (``response_format`` of type
``json_object`` or ``json_schema``): those carry the implicit label only. The canned refusal
does get it: it is the service's output shown to the reader like any other answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.duties import ExplicitLabel, LabelingSettings
from gateway.policy import Policy

__all__ = [
    "LABEL_HEADER",
    "Labeler",
    "end_piece",
    "label_completion",
    "labeled",
    "labeled_body",
    "labeler_for",
    "must_be_json",
    "start_piece",
    "with_aigc",
]

LABEL_HEADER = "x-aigc-label"
_JSON_FORMATS = frozenset({"json_object", "json_schema"})


def _quoted(value: str) -> str:
    """A JSON string literal, ASCII only (ids are ASCII: orjson, the faster, suffices)."""
    return orjson.dumps(value).decode() if value.isascii() else json.dumps(value, ensure_ascii=True)


@dataclass(frozen=True)
class Labeler:
    """The labels one policy asks for, served under one provider name."""

    provider: str
    settings: LabelingSettings
    policy_version: str
    #: The fixed parts of the metadata around the two ids, built once, not per response.
    _parts: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        producer = _quoted(self.provider)
        head = '{"AIGC":{"Label":"1","ContentProducer":' + producer + ',"ProduceID":'
        version = _quoted(self.policy_version)
        middle = f',"ReservedCode1":{version},"ContentPropagator":{producer},"PropagateID":'
        object.__setattr__(self, "_parts", (head, middle, ',"ReservedCode2":""}}'))

    @property
    def implicit(self) -> bool:
        return self.settings.implicit

    def explicit(self, response_format: Any) -> ExplicitLabel | None:
        """The explicit label for a request, or None when off or the answer must be JSON."""
        if self.settings.explicit is None or must_be_json(response_format):
            return None
        return self.settings.explicit

    def metadata(self, produce_id: str, request_id: str) -> bytes:
        """The implicit label as compact ASCII JSON: the header value and the ``aigc`` field."""
        head, middle, tail = self._parts
        return (head + _quoted(produce_id) + middle + _quoted(request_id) + tail).encode()


_LABELERS: dict[tuple[str, str], Labeler] = {}


def labeler_for(provider: str, policy: Policy) -> Labeler:
    """The :class:`Labeler` for a provider and policy, made once per policy version (the
    version hashes the whole policy, labeling section included)."""
    key = (provider, policy.version)
    labeler = _LABELERS.get(key)
    if labeler is None:
        if len(_LABELERS) >= 256:  # policies reloaded many times: start afresh
            _LABELERS.clear()
        labeler = _LABELERS[key] = Labeler(provider, policy.spec.labeling, policy.version)
    return labeler


def must_be_json(response_format: Any) -> bool:
    """Whether the request's ``response_format`` asks for JSON output."""
    return isinstance(response_format, dict) and response_format.get("type") in _JSON_FORMATS


def start_piece(label: ExplicitLabel, first: str) -> str:
    """What goes before text that begins with ``first``."""
    return label.text if first.startswith("\n") else label.text + "\n"


def end_piece(label: ExplicitLabel, last: str) -> str:
    """What goes after text that ends with ``last``."""
    return label.text if last.endswith("\n") else "\n" + label.text


def labeled(text: str, label: ExplicitLabel) -> str:
    """``text`` with the explicit label at its place; empty text stays empty."""
    if not text:
        return text
    if label.position == "start":
        return start_piece(label, text) + text
    return text + end_piece(label, text)


def label_completion(response: dict[str, Any], label: ExplicitLabel) -> bool:
    """Label every choice's ``message.content`` in place; True when anything changed."""
    changed = False
    for choice in response.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(text := message.get("content"), str) and text:
            message["content"] = labeled(text, label)
            changed = True
    return changed


def with_aigc(body: bytes, metadata: bytes) -> bytes:
    """A JSON object's bytes with ``"aigc": metadata`` added as its last field, without
    parsing and re-encoding the body. The caller knows ``body`` is an object without ``aigc``.
    """
    inner = body.rstrip()
    if not inner.endswith(b"}"):
        raise ValueError("not a JSON object")
    inner = inner[:-1].rstrip()
    # Only an empty object ends in its own opening brace here: a member always ends in a
    # value (a quote, digit, letter, ] or }).
    separator = b"" if inner.endswith(b"{") else b","
    return inner + separator + b'"aigc":' + metadata + b"}"


def labeled_body(
    labeler: Labeler,
    explicit: ExplicitLabel | None,
    response: dict[str, Any],
    raw: bytes | None,
    request_id: str,
    label_text: Callable[[dict[str, Any], ExplicitLabel], bool] = label_completion,
) -> tuple[bytes, bytes | None]:
    """A response body with its labels, and the ``x-aigc-label`` value (None when the
    implicit label is off). ``raw`` is the body as the upstream sent it while ``response`` is
    unchanged, else None; an unchanged body is not re-encoded. ``label_text`` adds the explicit
    label to the dialect's answer text (a ``chat.completion``'s by default) and says whether
    anything changed."""
    if explicit is not None and label_text(response, explicit):
        raw = None
    if not labeler.implicit:
        return (raw if raw is not None else orjson.dumps(response)), None
    produce_id = response.get("id")
    if not isinstance(produce_id, str) or not produce_id:
        produce_id = request_id
    metadata = labeler.metadata(produce_id, request_id)
    if raw is None or "aigc" in response:  # an upstream's own aigc field is replaced, not doubled
        response["aigc"] = orjson.Fragment(metadata)
        return orjson.dumps(response), metadata
    return with_aigc(raw, metadata), metadata

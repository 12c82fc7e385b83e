"""The OpenAI legacy completions dialect (``POST /v1/completions``): request → segments,
decisions → responses.

As for chat, only the fields the gateway reads are validated; every other field is sent
upstream untouched. Prompts given as token ids (a list of integers, or a list of such lists)
cannot be screened: the gateway has no tokenizer of the upstream's model to read them with. The
policy's ``token_ids`` rejects them (the default) or lets them pass unscreened; the answer is
screened either way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from gateway.duties import ExplicitLabel
from gateway.errors import InvalidRequest
from gateway.incidents import new_id
from gateway.labels import labeled
from gateway.openai_chat import apply_output as apply_chat_output
from gateway.policy import Policy
from gateway.screening import Decision, Segment
from gateway.stream.sse import encode_data

__all__ = [
    "CompletionRequest",
    "TextOrTokens",
    "apply_output",
    "check_token_ids",
    "choice_count",
    "input_segments",
    "label_texts",
    "output_segments",
    "refusal_completion",
    "refusal_stream",
    "text_segments",
]

_ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


#: A prompt or an embeddings input: text, texts, token ids or lists of token ids. Strict: a
#: value that is neither text nor token ids must not slip by as either.
TextOrTokens = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1)
    prompt: TextOrTokens | None = None
    suffix: StrictStr | None = None
    stream: StrictBool | None = False
    n: StrictInt | None = Field(None, ge=1, le=128)
    echo: StrictBool | None = None
    user: str | None = None


def choice_count(request: CompletionRequest) -> int:
    """Choices in the answer: ``n`` for each prompt of a batch."""
    prompts = 1
    if isinstance(request.prompt, list) and request.prompt and not isinstance(request.prompt[0], int):
        prompts = len(request.prompt)
    return (request.n or 1) * prompts


def check_token_ids(value: TextOrTokens | None, name: str, policy: Policy) -> None:
    """Reject token ids unless the policy lets them pass unscreened (they would be a way around
    input screening)."""
    if (
        policy.spec.token_ids == "reject"
        and isinstance(value, list)
        and value
        and not isinstance(value[0], str)
    ):
        raise InvalidRequest(
            f"'{name}' given as token ids cannot be screened; send text (this gateway's policy "
            "accepts no token ids)",
            param=name,
            code="token_ids_not_accepted",
        )


def text_segments(value: TextOrTokens | None, name: str) -> list[Segment]:
    """The texts of a prompt or embeddings input (the field ``name``), as the user's words."""
    if isinstance(value, str):
        return [Segment(value, "user", (name,))] if value else []
    # Token ids pass unscreened where the policy allows them (check_token_ids).
    return [Segment(v, "user", (name, i)) for i, v in enumerate(value or ()) if isinstance(v, str) and v]


def input_segments(request: CompletionRequest) -> list[Segment]:
    """The prompt text(s) and the suffix."""
    segments = text_segments(request.prompt, "prompt")
    if request.suffix:
        segments.append(Segment(request.suffix, "user", ("suffix",)))
    return segments


def output_segments(response: dict[str, Any]) -> list[Segment]:
    """Each choice's ``text`` (with ``echo``, the echoed prompt too: it is what the client sees)."""
    segments = []
    for c, choice in enumerate(response.get("choices") or ()):
        text = choice.get("text") if isinstance(choice, dict) else None
        if isinstance(text, str) and text:
            segments.append(Segment(text, "content", ("choices", c, "text")))
    return segments


def _replace_text(choice: dict[str, Any], text: str) -> None:
    choice["text"] = text


def apply_output(
    response: dict[str, Any],
    decision: Decision,
    segments: Sequence[Segment],
    policy: Policy,
    annotation: dict[str, Any],
) -> None:
    """Chat's rules (:func:`gateway.openai_chat.apply_output`) on ``choices[].text``, in place."""
    apply_chat_output(response, decision, segments, policy, annotation, replace=_replace_text)


def label_texts(response: dict[str, Any], label: ExplicitLabel) -> bool:
    """Label every choice's ``text`` in place; True when anything changed."""
    changed = False
    for choice in response.get("choices") or ():
        if isinstance(choice, dict) and isinstance(text := choice.get("text"), str) and text:
            choice["text"] = labeled(text, label)
            changed = True
    return changed


def _choices(count: int, text: str) -> list[dict[str, Any]]:
    return [
        {"text": text, "index": i, "finish_reason": "content_filter", "logprobs": None} for i in range(count)
    ]


def refusal_completion(
    request: CompletionRequest, policy: Policy, annotation: dict[str, Any]
) -> dict[str, Any]:
    """A complete ``text_completion`` carrying the policy's canned reply in every choice."""
    return {
        "id": new_id("cmpl-modgate"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": _choices(choice_count(request), policy.spec.refusal.message),
        "usage": dict(_ZERO_USAGE),
        "modgate": annotation,
    }


def refusal_stream(request: CompletionRequest, annotation: dict[str, Any], message: str) -> bytes:
    """The canned reply (``message``, labelled when the policy asks) as a stream: a chunk per
    choice, the ``modgate`` object on the last, the usage chunk when asked for, ``[DONE]``."""
    base = {"id": new_id("cmpl-modgate"), "object": "text_completion", "created": int(time.time())}
    base["model"] = request.model
    events: list[dict[str, Any]] = [
        {**base, "choices": [c]} for c in _choices(choice_count(request), message)
    ]
    events[-1]["modgate"] = annotation
    options = (request.model_extra or {}).get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append({**base, "choices": [], "usage": dict(_ZERO_USAGE)})
    return b"".join(encode_data(orjson.dumps(e)) for e in events) + b"data: [DONE]\n\n"

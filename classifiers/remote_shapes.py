"""The request bodies and answers of the remote services that ``type: remote`` speaks to.

Each shape turns a batch of texts into a JSON body and the service's JSON answer into one
``{label: score}`` dict per text, in order. An answer that does not have the shape raises
:class:`RemoteError` with a message naming what is wrong, never the texts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "OPENAI_CATEGORY_CODES",
    "RemoteError",
    "RemoteTimeout",
    "openai_body",
    "parse_openai",
    "parse_text_classification",
    "text_classification_body",
]

#: OpenAI moderation categories -> GB/T 45654 Appendix A codes (and the bundled model's custom
#: codes), each at threshold 0.5: OpenAI publishes no per-category thresholds, so tune them per
#: deployment with ``labels``.
OPENAI_CATEGORY_CODES: dict[str, str] = {
    # Insults and abuse aimed at a person: their honour (A.4.d), as the bundled model's `insult`.
    "harassment": "A.4.d",
    # A threat to a person goes beyond insult: their physical and mental health (A.4.a).
    "harassment/threatening": "A.4.a",
    # OpenAI's hate covers every protected group and does not say which: "other discrimination".
    "hate": "A.2.i",
    # Calls for violence against a group promote violence (A.1.f); `hate` scores the group part.
    "hate/threatening": "A.1.f",
    # Advice on wrongdoing: what the bundled model calls an illegal request.
    "illicit": "X.illegal_request",
    # Advice on violent wrongdoing (weapons, attacks) is violence content, which blocks output;
    # X.illegal_request only flags it in the default policy.
    "illicit/violent": "A.1.f",
    # Self-harm has no Appendix A code; the bundled model's custom code keeps its own rule.
    "self-harm": "X.self_harm",
    "self-harm/intent": "X.self_harm",
    "self-harm/instructions": "X.self_harm",
    # Obscenity (淫秽色情) is A.1.f; sexual content involving minors is its gravest case, with no
    # code of its own.
    "sexual": "A.1.f",
    "sexual/minors": "A.1.f",
    # Violence, depicted or promoted (暴力): A.1.f.
    "violence": "A.1.f",
    "violence/graphic": "A.1.f",
}

#: Rounding slack for scores a hair outside [0, 1] (float32 softmax on the server side).
_SLACK = 1e-6


class RemoteError(RuntimeError):
    """A remote classifier got no usable answer: connection error, non-2xx status, invalid
    JSON, wrong shape or wrong number of results. The message names the status or reason,
    never the texts."""


class RemoteTimeout(RemoteError, TimeoutError):
    """The service did not answer within ``request_timeout_s`` (counted as a timeout)."""


def openai_body(texts: Sequence[str], model: str | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {**extra, "input": list(texts)}
    if model is not None:
        body["model"] = model
    return body


def text_classification_body(texts: Sequence[str], extra: Mapping[str, Any]) -> dict[str, Any]:
    return {**extra, "inputs": list(texts)}


def parse_openai(answer: Any, n: int) -> list[dict[str, float]]:
    """``{"results": [{"category_scores": {name: score}}, ...]}``, one result per text."""
    if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
        raise RemoteError("answer has no 'results' list")
    results: list[Any] = answer["results"]
    _check_count(len(results), n)
    out = []
    for i, result in enumerate(results):
        scores = result.get("category_scores") if isinstance(result, dict) else None
        if not isinstance(scores, dict):
            raise RemoteError(f"results[{i}] has no 'category_scores' object")
        out.append({str(k): _score(v, f"results[{i}].category_scores.{k}") for k, v in scores.items()})
    return out


def parse_text_classification(answer: Any, n: int) -> list[dict[str, float]]:
    """One entry per text: a list of ``{label, score}`` (all labels) or one ``{label, score}``
    (top-1: the other labels are absent). A flat list of ``{label, score}`` is one text's labels
    when one text was sent: some servers drop the outer list for a single input."""
    if not isinstance(answer, list):
        raise RemoteError(f"answer is a JSON {type(answer).__name__}, not a list")
    if n == 1 and len(answer) > 1 and all(isinstance(e, dict) for e in answer):
        answer = [answer]
    _check_count(len(answer), n)
    out = []
    for i, entry in enumerate(answer):
        pairs = entry if isinstance(entry, list) else [entry]
        labels: dict[str, float] = {}
        for j, pair in enumerate(pairs):
            if not isinstance(pair, dict) or not isinstance(pair.get("label"), str):
                raise RemoteError(f"[{i}][{j}] is not a {{label, score}} object")
            score = _score(pair.get("score"), f"[{i}][{j}]")
            labels[pair["label"]] = max(score, labels.get(pair["label"], 0.0))
        out.append(labels)
    return out


def _check_count(got: int, sent: int) -> None:
    if got != sent:
        raise RemoteError(f"answer has {got} results for {sent} texts")


def _score(value: Any, where: str) -> float:
    # bool is an int in Python, and JSON true is no score.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RemoteError(f"{where}: a score is not a number")
    if not -_SLACK <= value <= 1.0 + _SLACK:
        raise RemoteError(f"{where}: score {value:.4g} is outside [0, 1] (raw logits?)")
    return min(max(float(value), 0.0), 1.0)

"""``type: remote``: a moderation or text-classification service reached over HTTP.

Two shapes of service (``classifiers.remote_shapes``):

* ``openai-moderation``: OpenAI's ``/v1/moderations`` and what copies it, another modgate
  included. Its categories map to risk codes by a default map; categories that are risk codes
  themselves (another modgate's answer) pass through unchanged.
* ``text-classification``: a Hugging Face style server (TEI, the Inference API, a pipeline
  behind Starlette) answering ``{label, score}`` per text. Its labels need a map.

A label map means what a local model's does (:class:`~classifiers.transformer.LabelMap`):
scores are calibrated so each label's threshold lands on 0.5, and several labels of one code
keep the highest. Every request goes through the process's pooled client
(:func:`classifiers.http.shared_client`). The call's overall timeout, its concurrency limit,
circuit breaker, cache and ``on_error`` are the screener's (``classifiers.guarded``), the same
for every classifier; this module only says whether its verdicts may be cached
(``deterministic``) and raises :class:`RemoteError` when it has none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import httpx
from pydantic import Field, field_validator, model_validator

from classifiers.base import RISK_CODE_PATTERN, Scores
from classifiers.http import expand_headers, shared_client
from classifiers.registry import ClassifierParams
from classifiers.remote_shapes import (
    OPENAI_CATEGORY_CODES,
    RemoteError,
    RemoteTimeout,
    openai_body,
    parse_openai,
    parse_text_classification,
    text_classification_body,
)
from classifiers.transformer import LabelMap, calibrate

__all__ = [
    "OPENAI_CATEGORY_CODES",
    "RemoteClassifier",
    "RemoteError",
    "RemoteParams",
    "RemoteTimeout",
    "Shape",
]

log = logging.getLogger(__name__)

Shape = Literal["openai-moderation", "text-classification"]
T = TypeVar("T")

#: The body field that carries the texts, per shape; ``body`` may not override it.
_TEXTS_FIELD: dict[str, str] = {"openai-moderation": "input", "text-classification": "inputs"}
_RISK_CODE = re.compile(RISK_CODE_PATTERN)


class RemoteParams(ClassifierParams):
    """Params of a ``type: remote`` classifier."""

    url: str = Field(
        ...,
        description="The full endpoint, e.g. https://api.openai.com/v1/moderations or http://tei:8080/predict.",
    )
    shape: Shape = Field(..., description="openai-moderation or text-classification: the service's API.")
    labels: dict[str, LabelMap] = Field(
        default_factory=dict,
        description="Service label -> risk code and threshold; labels not listed are ignored. Required for "
        "text-classification. For openai-moderation, empty means OpenAI's categories by the default map, "
        "and categories that are risk codes themselves (another modgate) pass through at threshold 0.5.",
    )
    model: str | None = Field(None, description="openai-moderation only: the body's model field.")
    body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra body fields sent with every request, e.g. {parameters: {top_k: null}} or "
        "{raw_scores: false}.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Request headers; ${ENV} references are resolved when the policy loads (unset: error).",
    )
    max_batch: int = Field(
        32, ge=1, le=4096, description="Texts per request; more are split into concurrent requests."
    )
    request_timeout_s: float = Field(10.0, gt=0, le=600, description="httpx timeout of each request.")
    cache: bool = Field(
        True, description="Verdicts may be cached by normalised text (the service is stable)."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url

    @model_validator(mode="after")
    def _consistent(self) -> RemoteParams:
        if self.shape == "text-classification" and not self.labels:
            raise ValueError(
                "labels: required for shape text-classification (service label -> {code, threshold})"
            )
        if self.shape != "openai-moderation" and self.model is not None:
            raise ValueError(
                "model: only for shape openai-moderation (put it in body if the server takes one)"
            )
        texts_field = _TEXTS_FIELD[self.shape]
        if texts_field in self.body or (self.model is not None and "model" in self.body):
            raise ValueError(f"body: must not set {texts_field!r} (the texts) nor 'model' when model is set")
        # Resolved here only to fail when the policy loads, with the classifier's key in the error;
        # the params keep the ${ENV} form so no secret lands in them.
        expand_headers(self.headers, "headers")
        return self


class RemoteClassifier:
    """Implements :class:`classifiers.base.Classifier` over a remote service."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        shape: Shape,
        labels: Mapping[str, LabelMap],
        passthrough: bool = False,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        model: str | None = None,
        max_batch: int = 32,
        request_timeout_s: float = 10.0,
        deterministic: bool = True,
    ) -> None:
        self.name = name
        self.shape = shape
        #: Whether the same text always gets the same verdict: the screener then caches it.
        self.deterministic = deterministic
        self.revision = _revision(shape, url, model)
        self._url = url
        self._labels = dict(labels)
        self._passthrough = passthrough
        self._headers = dict(headers or {})
        self._extra = dict(body or {})
        self._model = model
        self._max_batch = max_batch
        self._timeout_s = request_timeout_s
        self._timeout = httpx.Timeout(request_timeout_s)
        self._where = f"remote classifier {name!r}"

    @classmethod
    def from_params(cls, name: str, params: RemoteParams) -> RemoteClassifier:
        labels = params.labels
        if not labels and params.shape == "openai-moderation":
            labels = {category: LabelMap(code=code) for category, code in OPENAI_CATEGORY_CODES.items()}
        return cls(
            name, url=params.url, shape=params.shape, labels=labels,
            passthrough=params.shape == "openai-moderation" and not params.labels,
            headers=expand_headers(params.headers, f"classifiers.{name}.headers"), body=params.body,
            model=params.model, max_batch=params.max_batch, request_timeout_s=params.request_timeout_s,
            deterministic=params.cache,
        )  # fmt: skip

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        if not texts:
            return []
        step = self._max_batch
        batches = [list(texts[i : i + step]) for i in range(0, len(texts), step)]
        # One request is the common case: awaiting it directly spares a task per call.
        answers = (
            [await self._request(batches[0])]
            if len(batches) == 1
            else await _all(map(self._request, batches))
        )
        return [self.scores(labels) for answer in answers for labels in answer]

    def scores(self, found: Mapping[str, float]) -> Scores:
        """One text's ``{label: score}`` from the service as calibrated scores per risk code."""
        by_code: dict[str, float] = {}
        for label, score in found.items():
            spec = self._labels.get(label)
            if spec is not None:
                code, calibrated = spec.code, calibrate(score, spec.threshold)
            elif self._passthrough and _RISK_CODE.match(label):
                code, calibrated = label, score  # already on the policy's scale: threshold 0.5
            else:
                continue
            if calibrated > by_code.get(code, 0.0):
                by_code[code] = calibrated
        return Scores(self.name, by_code, revision=self.revision)

    def body(self, texts: Sequence[str]) -> dict[str, Any]:
        if self.shape == "openai-moderation":
            return openai_body(texts, self._model, self._extra)
        return text_classification_body(texts, self._extra)

    def parse(self, answer: Any, sent: int) -> list[dict[str, float]]:
        if self.shape == "openai-moderation":
            return parse_openai(answer, sent)
        return parse_text_classification(answer, sent)

    async def _request(self, texts: list[str]) -> list[dict[str, float]]:
        start = time.perf_counter()
        try:
            response = await shared_client().post(
                self._url, json=self.body(texts), headers=self._headers, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            reason = f"no answer within {self._timeout_s:g} s ({type(exc).__name__})"
            raise self._failed(reason, RemoteTimeout) from exc
        except httpx.HTTPError as exc:
            raise self._failed(f"request failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
        if not response.is_success:
            raise self._failed(f"HTTP {response.status_code} {response.reason_phrase}".rstrip())
        try:
            answer = json.loads(response.content)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
            raise self._failed("the answer is not JSON") from exc
        try:
            parsed = self.parse(answer, len(texts))
        except RemoteError as exc:
            raise self._failed(str(exc)) from None
        ms = (time.perf_counter() - start) * 1000
        log.debug(
            "remote classifier=%s texts=%d status=%d ms=%.1f", self.name, len(texts), response.status_code, ms
        )
        return parsed

    def _failed(self, reason: str, kind: type[RemoteError] = RemoteError) -> RemoteError:
        # The screener logs only the exception's type; the reason (status, shape) is logged here.
        log.warning(
            "remote classifier failed classifier=%s service=%s reason=%s", self.name, self.revision, reason
        )
        return kind(f"{self._where}: {reason}")


async def _all(calls: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run the calls concurrently, results in order; the first failure cancels the others and
    is raised as itself (not in an ExceptionGroup), as a single call's would be."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except ExceptionGroup as failed:
        raise failed.exceptions[0]  # noqa: B904 (its own cause is kept; the group adds nothing)
    return [task.result() for task in tasks]


def _revision(shape: str, url: str, model: str | None) -> str:
    # Host and path only: no credentials or query string in what versions the policy.
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port is not None else ""
    revision = f"remote:{shape}:{parsed.host}{port}{parsed.path}"
    return f"{revision}:{model}" if model else revision

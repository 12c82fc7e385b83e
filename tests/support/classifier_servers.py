"""Scripted remote classification services for ``type: remote``, served for real on loopback.

One Starlette app answers both shapes, scoring texts by keywords in English and Chinese:

* ``POST /v1/moderations``: OpenAI's moderation API. "bomb"/"炸弹" score ``violence`` and
  ``illicit/violent`` high, "idiot"/"白痴" ``harassment``; every category is present.
* ``POST /predict``: a text-classification server (labels ``toxic``, ``obscene``, ``neutral``).
  ``parameters.top_k == 1`` answers one ``{label, score}`` per text; ``flat: true`` with a
  single input answers a flat list of them, as some servers do.
* ``POST /status/{code}``: that status with an error body.
* ``POST /bad/{kind}``: a malformed answer (see :data:`MALFORMED`).
* ``?delay=SECONDS`` on any path answers late (``/slow`` is ``/v1/moderations`` after 1 s).

Every request is recorded (path, headers, JSON body), with the most requests seen in flight.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

OPENAI_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)  # fmt: skip

#: Answers that are not what either shape promises, by name.
MALFORMED: dict[str, bytes] = {
    "invalid-json": b'{"results": [',
    "results-not-list": json.dumps({"results": {"hate": 0.9}}).encode(),
    "wrong-count": json.dumps({"results": []}).encode(),
    "not-list": json.dumps({"label": "toxic", "score": 0.9}).encode(),
    "tc-wrong-count": json.dumps(
        [[{"label": "toxic", "score": 0.1}], [{"label": "toxic", "score": 0.2}]]
    ).encode(),
    "no-category-scores": json.dumps({"results": [{"flagged": True, "categories": {"hate": True}}]}).encode(),
    "score-not-number": json.dumps({"results": [{"category_scores": {"hate": "high"}}]}).encode(),
    "tc-score-not-number": json.dumps([[{"label": "toxic", "score": None}]]).encode(),
}


def violence(text: str) -> float:
    return 0.92 if "bomb" in text.lower() or "炸弹" in text else 0.01


def insult(text: str) -> float:
    return 0.75 if "idiot" in text.lower() or "白痴" in text else 0.02


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ClassifierServer:
    requests: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def clear(self) -> None:
        self.requests.clear()
        self.max_in_flight = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/moderations", self._wrap(self.moderations), methods=["POST"]),
                Route("/slow", self._wrap(self.slow), methods=["POST"]),
                Route("/predict", self._wrap(self.predict), methods=["POST"]),
                Route("/status/{code:int}", self._wrap(self.status), methods=["POST"]),
                Route("/bad/{kind}", self._wrap(self.bad), methods=["POST"]),
            ]
        )

    def _wrap(self, handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            body = json.loads(await request.body())
            self.requests.append(Seen(request.url.path, dict(request.headers), body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(float(request.query_params.get("delay", 0)))
                response: Response = await handler(request, body)
                return response
            finally:
                self.in_flight -= 1

        return endpoint

    async def moderations(self, request: Request, body: dict[str, Any]) -> Response:
        results = []
        for text in body["input"]:
            scores = dict.fromkeys(OPENAI_CATEGORIES, 0.001)
            scores.update({"violence": violence(text), "illicit/violent": violence(text) / 2})
            scores["harassment"] = insult(text)
            flags = {k: v >= 0.5 for k, v in scores.items()}
            results.append({"flagged": any(flags.values()), "categories": flags, "category_scores": scores})
        return JSONResponse({"id": "modr-test", "model": body.get("model", "test-mod"), "results": results})

    async def slow(self, request: Request, body: dict[str, Any]) -> Response:
        await asyncio.sleep(1.0)
        return await self.moderations(request, body)

    async def predict(self, request: Request, body: dict[str, Any]) -> Response:
        answers: list[Any] = []
        for text in body["inputs"]:
            labels: list[dict[str, Any]] = [
                {"label": "toxic", "score": max(violence(text), insult(text))},
                {"label": "obscene", "score": 0.03},
                {"label": "neutral", "score": 1 - max(violence(text), insult(text))},
            ]
            labels.sort(key=lambda pair: -pair["score"])
            answers.append(labels[0] if body.get("parameters", {}).get("top_k") == 1 else labels)
        if body.get("flat") and len(answers) == 1:
            return JSONResponse(answers[0])
        return JSONResponse(answers)

    async def status(self, request: Request, body: dict[str, Any]) -> Response:
        code = request.path_params["code"]
        headers = {"retry-after": "1"} if code == 429 else {}
        return JSONResponse({"error": {"message": "scripted failure"}}, status_code=code, headers=headers)

    async def bad(self, request: Request, body: dict[str, Any]) -> Response:
        return Response(MALFORMED[request.path_params["kind"]], media_type="application/json")

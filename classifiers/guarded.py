"""What stands between the screener and a slow or fragile classifier: a timeout, a limit on
calls in flight, a circuit breaker and a result cache.

A guard LLM on a model server or a remote moderation API can be slow, overloaded or down.
Without a breaker every request would wait out the full timeout while it is down; with one,
after ``failures`` failures in a row calls fail at once for ``reset_s``, then one trial call
decides whether it closes again. The screener turns every failure into the policy's
``on_error`` and counts it by kind (:class:`Failure`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from classifiers.base import Classifier, DirectedClassifier, Direction, Scores
from classifiers.batcher import Overloaded
from classifiers.lru import LRU
from classifiers.normalize import normalize

__all__ = ["BreakerSettings", "CircuitBreaker", "CircuitOpen", "Failure", "Guarded", "failure_kind"]

Failure = Literal["timeout", "circuit_open", "overloaded", "error"]


class CircuitOpen(RuntimeError):
    """The classifier failed too often lately; it is not called until its breaker resets."""


def failure_kind(exc: BaseException) -> Failure:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, CircuitOpen):
        return "circuit_open"
    if isinstance(exc, Overloaded):
        return "overloaded"
    return "error"


@dataclass(frozen=True)
class BreakerSettings:
    failures: int
    reset_s: float


class CircuitBreaker:
    """closed → (``failures`` in a row) → open → (``reset_s``) → half-open: one trial call;
    its success closes the breaker, its failure opens it again."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.settings.reset_s:
            return "half_open"
        return "open"

    def admit(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go through now."""
        state = self.state
        if state == "open" or (state == "half_open" and self._trial):
            raise CircuitOpen("circuit breaker is open")
        if state == "half_open":
            self._trial = True

    def release(self) -> None:
        """A call ended without a verdict on the classifier (its caller went away)."""
        self._trial = False

    def record(self, ok: bool) -> None:
        self._trial = False
        if ok:
            self._failures = 0
            self._opened_at = None
            return
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.settings.failures:
            self._opened_at = self._clock()


class Guarded:
    """One classifier of one policy with its run settings applied around every call.

    The cache serves classifiers that say they are ``deterministic`` (a guard LLM decoding
    greedily, a remote service): the same normalised text in the same direction gets the same
    verdict without another round trip. Local models keep their own caches.
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        timeout_s: float,
        max_concurrency: int | None = None,
        breaker: BreakerSettings | None = None,
        cache_size: int = 0,
    ) -> None:
        self.classifier = classifier
        self.name = classifier.name
        self.timeout_s = timeout_s
        self._limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self.breaker = CircuitBreaker(breaker) if breaker else None
        deterministic = bool(getattr(classifier, "deterministic", False))
        self._cache: LRU[str, Scores] | None = LRU(cache_size) if deterministic and cache_size else None

    async def classify(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        if self._cache is None:
            return await self._call(texts, direction)
        keys = [_key(t, direction) for t in texts]
        out: list[Scores | None] = [self._cache.get(k) for k in keys]
        todo = [i for i, hit in enumerate(out) if hit is None]
        if todo:
            fresh = await self._call([texts[i] for i in todo], direction)
            if len(fresh) != len(todo):
                raise ValueError(f"classifier {self.name!r} answered {len(fresh)} verdicts for {len(todo)}")
            for i, scores in zip(todo, fresh, strict=True):
                self._cache.put(keys[i], scores)
                out[i] = scores
        return [s for s in out if s is not None]

    async def _call(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        if self.breaker is not None:
            self.breaker.admit()
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._limit is None:
                    result = await self._classify(texts, direction)
                else:
                    async with self._limit:
                        result = await self._classify(texts, direction)
        except Exception:
            if self.breaker is not None:
                self.breaker.record(False)
            raise
        except BaseException:  # cancelled: the caller went away, which says nothing of the model
            if self.breaker is not None:
                self.breaker.release()
            raise
        if self.breaker is not None:
            self.breaker.record(True)
        return result

    async def _classify(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        if isinstance(self.classifier, DirectedClassifier):
            return await self.classifier.classify_directed(texts, direction)
        return await self.classifier.classify(texts)


def _key(text: str, direction: Direction) -> str:
    digest = hashlib.blake2b(normalize(text).text.encode("utf-8", "surrogatepass"), digest_size=16)
    return f"{direction[0]}{digest.hexdigest()}"

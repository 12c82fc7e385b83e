"""Encoder features for training a head, computed exactly as the gateway computes them.

Texts are normalised like at inference and run through the same (int8) encoder and pooling,
so the head is trained on the features it will see. Features are cached on disk by a hash of
the encoder build, the feature settings and the text: a second training run (other head
sizes, other seeds) skips the encoder entirely.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from classifiers.hf import LoadedModel
from classifiers.normalize import normalize

__all__ = ["FeatureCache", "compute_features"]

#: Characters kept per text for training: the first window is what the head learns from.
MAX_CHARS = 2000
#: Seconds between saves of the cache during a long run: each save rewrites the whole file
#: (hundreds of MB), so saving every few chunks rewrote it dozens of times.
SAVE_EVERY_S = 120.0


class FeatureCache:
    """``text hash -> feature row`` in one file per feature setting."""

    def __init__(self, directory: Path, setting: dict[str, object]) -> None:
        tag = hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]
        self.path = directory / f"features-{tag}.pt"
        self.rows: dict[str, torch.Tensor] = {}
        if self.path.is_file():
            self.rows = torch.load(self.path, weights_only=True)

    @staticmethod
    def key(text: str) -> str:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(self.rows, tmp)
        tmp.replace(self.path)


def compute_features(
    encoder: LoadedModel,
    texts: Sequence[str],
    cache: FeatureCache | None = None,
    *,
    chunk: int = 256,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """One feature row per text (its first window), reusing cached rows."""
    prepared = [normalize(t, cache=False).text[:MAX_CHARS] for t in texts]
    keys = [FeatureCache.key(t) for t in prepared]
    rows = cache.rows if cache is not None else {}
    todo = sorted(
        {k: i for i, k in enumerate(keys) if k not in rows}.values(), key=lambda i: len(prepared[i])
    )
    if progress:
        progress(len(texts) - len(todo))
    saved = time.monotonic()
    for at in range(0, len(todo), chunk):
        part = todo[at : at + chunk]
        feats, _ = encoder.encode([prepared[i] for i in part], overflow=False)
        for j, i in enumerate(part):
            rows[keys[i]] = feats[j].clone()
        if progress:
            progress(len(part))
        if cache is not None and time.monotonic() - saved > SAVE_EVERY_S:
            cache.save()  # long runs survive an interruption
            saved = time.monotonic()
    if cache is not None and todo:
        cache.save()
    return torch.stack([rows[k] for k in keys]) if keys else torch.zeros(0, encoder.dim)

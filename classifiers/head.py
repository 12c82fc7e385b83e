"""The trained head of an encoder + head model: pooled encoder features -> label logits.

An MLP with GELU between its layers; ``head.json`` gives its widths (:class:`HeadSpec`). A
lexical branch (hashed character n-grams beside the encoder features) was tried for
modgate-guard and left out: on the calibration slice it lowered the category labels' F1
(it over-fits the 40k training texts), see the model card.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from classifiers.hf import HeadSpec

__all__ = ["GuardHead"]


class GuardHead(nn.Module):
    """``dim`` encoder features -> hidden layers with GELU -> one logit per label."""

    def __init__(self, dim: int, spec: HeadSpec) -> None:
        super().__init__()
        self.labels = spec.labels
        layers: list[nn.Module] = []
        width = dim
        for size in spec.hidden:
            layers += [nn.Linear(width, size), nn.GELU()]
            width = size
        layers.append(nn.Linear(width, len(spec.labels)))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.mlp(features)
        return logits

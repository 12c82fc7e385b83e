"""Fit a multi-label head on encoder features, choose thresholds, and measure it.

Labels are partly unknown: a source that only says "harmful" (AdvBench) says nothing about
which category, and a hate tweet with no target group says nothing about the group. Those
entries are masked out of the loss instead of being taught as negatives.

Thresholds are chosen on a calibration slice carved out of the *training* split, never on
dev, so the dev figures in the model card are measured on data that chose nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from classifiers.confusion import Confusion
from classifiers.head import GuardHead
from classifiers.hf import HeadSpec, build_head

__all__ = ["binary_metrics", "choose_threshold", "fit_head", "label_matrix", "predict"]

GROUP_LABELS = ("disc_ethnicity", "disc_belief", "disc_nationality", "disc_region", "disc_gender", "disc_age",
                "disc_occupation", "disc_health")  # fmt: skip


def label_matrix(
    label_sets: Sequence[frozenset[str]], labels: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and a mask of which targets are known, one row per example."""
    index = {label: j for j, label in enumerate(labels)}
    y = torch.zeros(len(label_sets), len(labels))
    known = torch.ones(len(label_sets), len(labels))
    for i, tags in enumerate(label_sets):
        for tag in tags:
            y[i, index[tag]] = 1.0
        if tags == {"harmful", "privacy"}:
            # Personal information alone is not a reason to stop a text (the PII patterns
            # redact it): the privacy label learns it, the overall harmful score does not.
            y[i, index["harmful"]] = 0.0
        elif tags == {"harmful"}:  # harmful, category unknown
            known[i] = 0.0
            known[i, index["harmful"]] = 1.0
        elif "discrimination" in tags and not tags & set(GROUP_LABELS):
            for group in GROUP_LABELS:
                if group in index:
                    known[i, index[group]] = 0.0
    return y, known


def fit_head(
    x: torch.Tensor,
    y: torch.Tensor,
    known: torch.Tensor,
    spec: HeadSpec,
    *,
    epochs: int = 40,
    batch_size: int = 256,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    dropout: float = 0.1,
    seed: int = 13,
    weights: torch.Tensor | None = None,
) -> GuardHead:
    """Train ``build_head(spec)`` with masked, class-balanced binary cross-entropy; ``weights``
    (one per example) count some examples more than others."""
    torch.manual_seed(seed)
    head = build_head(x.shape[1], spec)
    drop = nn.Dropout(dropout)
    positives = (y * known).sum(0)
    negatives = ((1 - y) * known).sum(0)
    pos_weight = (negatives / positives.clamp(min=1.0)).clamp(1.0, 20.0)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for at in range(0, len(x), batch_size):
            idx = order[at : at + batch_size]
            logits = head(drop(x[idx]))
            losses = loss_fn(logits, y[idx]) * known[idx]
            if weights is not None:
                losses = losses * weights[idx, None]
            loss = losses.sum() / known[idx].sum().clamp(min=1.0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    head.eval()
    return head


@torch.inference_mode()
def predict(head: GuardHead, x: torch.Tensor) -> torch.Tensor:
    head.eval()
    return torch.sigmoid(head(x))


def binary_metrics(scores: torch.Tensor, truth: torch.Tensor, threshold: float) -> Confusion:
    pred = scores >= threshold
    t = truth.bool()
    tp = int((pred & t).sum())
    fp = int((pred & ~t).sum())
    fn = int((~pred & t).sum())
    tn = int((~pred & ~t).sum())
    return Confusion(tp, fp, tn, fn)


def choose_threshold(scores: torch.Tensor, truth: torch.Tensor, *, max_fpr: float | None = None) -> float:
    """The threshold with the best F1 on (scores, truth); with ``max_fpr``, the lowest
    threshold whose false-positive rate stays within it (the most recall at that cost)."""
    if not len(scores) or truth.sum() == 0 or truth.sum() == len(truth):
        return 0.5
    grid = torch.linspace(0.02, 0.98, 97)
    best, best_value = 0.5, -1.0
    for threshold in grid.tolist():
        m = binary_metrics(scores, truth, threshold)
        if max_fpr is not None:
            if m.fpr is not None and m.fpr <= max_fpr:
                return float(threshold)
            continue
        if (m.f1 or 0.0) > best_value:
            best, best_value = float(threshold), m.f1 or 0.0
    return best if max_fpr is None else 0.98

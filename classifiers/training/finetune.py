"""Fine-tune the encoder's top layers with LoRA adapters, jointly with a head, on the CPU.

Backprop through a whole encoder is out of reach on a 2-core CPU, so the bottom layers stay
frozen and run once: the hidden states entering the first tuned layer are cached (float16, in
memory) with the pooled states of the frozen layers the head reads, and each step runs only the
top ``layers`` encoder layers, forward and backward. The joint head only steers the adapters:
the shipped head is trained afterwards on the int8 features of the merged encoder, as before.

Texts come from the fitting part of the training split only (never calibration or dev), in a
seeded subsample that gives the targets the model card misses (sexism, harmful requests,
look-alikes) a larger share than their place in the data.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from classifiers.hf import HeadSpec, build_head, pool
from classifiers.lora import LoRALinear, add_adapters
from classifiers.normalize import normalize
from classifiers.training.card import BENIGN_INSTRUCTIONS, HARMFUL_REQUESTS
from classifiers.training.features import MAX_CHARS
from classifiers.training.sources import Example

__all__ = ["SHARES", "FinetuneSettings", "finetune", "subsample"]

Progress = Callable[[int], None]

#: Batches per pool whose texts are sorted by length before batching (see ``_bucketed``).
BUCKET_POOL = 50

#: Share of the subsample per group (the first group that matches an example takes it); a
#: group with fewer examples than its share gives the rest to no one.
SHARES: tuple[tuple[str, float, Callable[[Example], bool]], ...] = (
    ("swsr", 0.25, lambda e: e.source == "swsr"),
    ("written", 0.30, lambda e: e.source == "written"),
    ("harmful requests", 0.12, lambda e: e.source in HARMFUL_REQUESTS),
    ("benign instructions", 0.13, lambda e: e.source in BENIGN_INSTRUCTIONS),
    ("cold", 0.10, lambda e: e.source == "cold"),
    ("davidson", 0.05, lambda e: e.source == "davidson-hate-offensive"),
    ("other", 0.05, lambda e: True),
)


@dataclass(frozen=True)
class FinetuneSettings:
    layers: int  # the top encoder layers that get adapters
    rank: int
    alpha: float
    examples: int
    epochs: int = 1
    max_tokens: int = 96
    batch_size: int = 32
    lr: float = 5e-4
    head_lr: float = 2e-3
    minutes: float = 30.0  # training stops here even if the epochs are not done
    seed: int = 13


def subsample(examples: Sequence[Example], idx: Sequence[int], total: int, seed: int) -> list[int]:
    """At most ``total`` of ``idx``, by :data:`SHARES`, each group's pick ordered by a seeded hash."""
    groups: dict[str, list[int]] = {name: [] for name, _, _ in SHARES}
    for i in idx:
        name = next(n for n, _, match in SHARES if match(examples[i]))
        groups[name].append(i)
    chosen: list[int] = []
    for name, share, _ in SHARES:
        ranked = sorted(groups[name], key=lambda i: hashlib.sha256(f"ft:{seed}:{i}".encode()).digest())
        chosen += ranked[: round(total * share)]
    return sorted(chosen)


def finetune(
    model: nn.Module,
    tokenizer: Any,
    spec: HeadSpec,
    texts: Sequence[str],
    targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    settings: FinetuneSettings,
    progress: Callable[[str, int], Progress] | None = None,
) -> tuple[dict[str, LoRALinear], dict[str, Any]]:
    """Adapters on ``model``'s top ``settings.layers`` layers trained on ``texts`` with
    ``targets`` (labels, known-mask, per-example weights); returns them and what the run did."""
    torch.manual_seed(settings.seed)
    started = time.monotonic()
    depth = len(getattr(model.encoder, "layer"))  # noqa: B009 (nn.Module types it as Tensor)
    first = max(0, depth - settings.layers)  # an encoder with fewer layers is tuned whole
    ids = _tokenize(tokenizer, spec.prefix, texts, settings.max_tokens)
    states, frozen = _cache_states(model, ids, first, spec, progress and progress("caching states", len(ids)))
    cached_s = time.monotonic() - started
    adapters = add_adapters(model, range(first, depth), settings.rank, settings.alpha)
    head = build_head(int(getattr(model.config, "hidden_size")) * len(spec.layers), spec)  # noqa: B009
    steps = settings.epochs * math.ceil(len(ids) / settings.batch_size)
    loop = _Loop(model, head, adapters, targets, spec, first, settings, steps)
    generator = torch.Generator().manual_seed(settings.seed)
    advance = progress("fine-tuning", steps) if progress else None
    done, losses = 0, []
    deadline = started + settings.minutes * 60
    for _ in range(settings.epochs):
        for batch in _bucketed(ids, settings.batch_size, generator):
            if time.monotonic() > deadline:
                break
            losses.append(loop.step(batch, states, frozen))
            done += 1
            if advance:
                advance(1)
    model.eval()
    stats = asdict(settings) | {
        "texts": len(ids), "steps": done, "planned_steps": steps, "cache_seconds": round(cached_s),
        "seconds": round(time.monotonic() - started),
        "first_loss": round(sum(losses[:20]) / max(1, len(losses[:20])), 4),
        "last_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
        "tuned_layers": list(range(first, depth)),
    }  # fmt: skip
    return adapters, stats


def _bucketed(ids: Sequence[Sequence[int]], size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch's batches in a seeded random order, each of texts of about one length.

    Most texts are far shorter than ``max_tokens``: a batch padded to its longest text costs
    what all its texts would at that length. Shuffled texts are sorted by length within pools of
    :data:`BUCKET_POOL` batches, cut into batches, and the batches shuffled again.
    """
    order = torch.randperm(len(ids), generator=generator).tolist()
    batches = []
    pool = size * BUCKET_POOL
    for at in range(0, len(order), pool):
        ranked = sorted(order[at : at + pool], key=lambda i: len(ids[i]))
        batches += [ranked[k : k + size] for k in range(0, len(ranked), size)]
    return [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]


def _tokenize(tokenizer: Any, prefix: str, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids as :func:`classifiers.training.features.compute_features` feeds the encoder."""
    prepared = [prefix + normalize(t, cache=False).text[:MAX_CHARS] for t in texts]
    return list(tokenizer(prepared, truncation=True, max_length=max_tokens, padding=False)["input_ids"])


def _state_index(layer: int, depth: int) -> int:
    """``hidden_states`` index of a ``spec.layers`` entry (0 is the embeddings)."""
    return layer if layer >= 0 else depth + 1 + layer


def _padded(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    states = torch.zeros(len(rows), width, rows[0].shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        states[i, : len(r)] = r.float()
        mask[i, : len(r)] = 1
    return states, mask


@torch.inference_mode()
def _cache_states(
    model: nn.Module, ids: list[list[int]], first: int, spec: HeadSpec, advance: Progress | None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per text, the hidden states entering layer ``first`` (float16, unpadded), and the pooled
    states of the frozen ``spec.layers`` (float32, one row per text)."""
    depth = len(getattr(model.encoder, "layer"))  # noqa: B009
    frozen_at = [_state_index(layer, depth) for layer in spec.layers if _state_index(layer, depth) <= first]
    encoder: Any = model.encoder
    top, encoder.layer = encoder.layer, nn.ModuleList(list(encoder.layer)[:first])
    states: list[torch.Tensor] = [torch.zeros(0)] * len(ids)
    hidden = int(getattr(model.config, "hidden_size"))  # noqa: B009
    pooled = torch.zeros(len(ids), hidden * len(frozen_at))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad = 0
    try:
        model.eval()
        for at in range(0, len(order), 64):
            chunk = order[at : at + 64]
            width = len(ids[chunk[-1]])
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            if first == 0:  # every layer is tuned: the states entering them are the embeddings
                hidden_states = (getattr(model, "embeddings")(input_ids=input_ids),)  # noqa: B009
            else:
                hidden_states = model(
                    input_ids=input_ids, attention_mask=mask, output_hidden_states=True
                ).hidden_states
            if frozen_at:
                pooled[chunk] = torch.cat([pool(hidden_states[h], mask, spec.pooling) for h in frozen_at], -1)
            for row, i in enumerate(chunk):
                states[i] = hidden_states[first][row, : len(ids[i])].half().clone()
            if advance:
                advance(len(chunk))
    finally:
        encoder.layer = top
    return states, pooled


class _Loop:
    """One optimisation step: the top layers from cached states, the head, masked BCE."""

    def __init__(
        self,
        model: nn.Module,
        head: nn.Module,
        adapters: dict[str, LoRALinear],
        targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        spec: HeadSpec,
        first: int,
        settings: FinetuneSettings,
        steps: int,
    ) -> None:
        from transformers.masking_utils import create_bidirectional_mask

        self.model, self.head, self.spec, self.first = model, head, spec, first
        self.y, self.known, self.weights = targets
        self.mask_fn = create_bidirectional_mask
        self.depth = len(getattr(model.encoder, "layer"))  # noqa: B009
        positives = (self.y * self.known).sum(0)
        negatives = ((1 - self.y) * self.known).sum(0)
        pos_weight = (negatives / positives.clamp(min=1.0)).clamp(1.0, 20.0)
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
        self.drop = nn.Dropout(0.1)
        lora = [p for a in adapters.values() for p in (a.lora_a, a.lora_b)]
        self.optimiser = torch.optim.AdamW(
            [{"params": lora, "lr": settings.lr}, {"params": head.parameters(), "lr": settings.head_lr}],
            weight_decay=1e-4,
        )
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimiser, max_lr=[settings.lr, settings.head_lr], total_steps=max(steps, 1), pct_start=0.1
        )
        model.train()
        head.train()

    def step(self, batch: list[int], states: list[torch.Tensor], frozen: torch.Tensor) -> float:
        hidden, mask = _padded([states[i] for i in batch])
        config: Any = self.model.config
        attention = self.mask_fn(config=config, inputs_embeds=hidden, attention_mask=mask)
        tuned: dict[int, torch.Tensor] = {}
        encoder: Any = self.model.encoder
        for index in range(self.first, self.depth):
            hidden = encoder.layer[index](hidden, attention)
            tuned[index + 1] = pool(hidden, mask, self.spec.pooling)
        parts, at = [], 0
        width = int(getattr(self.model.config, "hidden_size"))  # noqa: B009
        for layer in self.spec.layers:
            h = _state_index(layer, self.depth)
            if h in tuned:
                parts.append(tuned[h])
            else:
                parts.append(frozen[batch, at : at + width])
                at += width
        logits = self.head(self.drop(torch.cat(parts, -1)))
        known = self.known[batch]
        losses = self.loss_fn(logits, self.y[batch]) * known * self.weights[batch, None]
        loss = losses.sum() / known.sum().clamp(min=1.0)
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        self.schedule.step()
        return float(loss.detach())

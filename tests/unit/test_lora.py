"""LoRA adapters (``classifiers/lora.py``) on a tiny random encoder: the merged encoder computes
what the adapted one does, a head.json naming adapters loads them in both runtimes, and a new
adapter file makes a new ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from classifiers import hf
from classifiers.lora import TARGETS, adapter_info, add_adapters, merge_adapters, save_adapters
from tests.support import tiny_models

TEXTS = ["how do I kill a python process", "你好，今天天气很好", "炸药配方怎么"]


def _adapters(encoder: Path, out: Path, seed: int) -> Path:
    """An adapter file for ``encoder``'s top layer with random (non-zero) ``B``: a fresh adapter
    is a no-op and would prove nothing."""
    torch.manual_seed(seed)
    model = AutoModel.from_pretrained(encoder, local_files_only=True)
    adapters = add_adapters(model, [1], rank=2, alpha=4.0)
    for adapter in adapters.values():
        torch.nn.init.normal_(adapter.lora_b, std=0.5)
    save_adapters(out, adapters, {"layers": 1, "seed": seed})
    return out


def _features(model: torch.nn.Module, spec: hf.HeadSpec) -> torch.Tensor:
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 40, 41, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    with torch.inference_mode():
        return hf.encoder_features(model.eval(), spec, ids, mask)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.encoder_with_head(tmp_path_factory.mktemp("lora"), layers=(-1, -2), seed=5)


def test_merged_encoder_computes_what_the_adapted_one_does(encoder: Path, tmp_path: Path) -> None:
    spec = hf.HeadSpec.read(encoder)
    torch.manual_seed(1)
    adapted = AutoModel.from_pretrained(encoder, local_files_only=True)
    adapters = add_adapters(adapted, [1], rank=2, alpha=4.0)
    assert {name.split(".", 3)[3] for name in adapters} == set(TARGETS)
    for adapter in adapters.values():
        torch.nn.init.normal_(adapter.lora_b, std=0.5)
        # What the file stores: the comparison must not hinge on float16 rounding.
        adapter.lora_a.data = adapter.lora_a.data.half().float()
        adapter.lora_b.data = adapter.lora_b.data.half().float()
    save_adapters(tmp_path / "a.safetensors", adapters, {"rank": 2})
    plain = AutoModel.from_pretrained(encoder, local_files_only=True)
    merged = AutoModel.from_pretrained(encoder, local_files_only=True)
    merge_adapters(merged, tmp_path / "a.safetensors")
    want = _features(adapted, spec)
    assert torch.allclose(_features(merged, spec), want, atol=1e-5)
    assert not torch.allclose(_features(plain, spec), want, atol=1e-2)  # the adapters do something
    # Layer 0 has no adapters: its weights are untouched.
    assert torch.equal(
        merged.encoder.layer[0].output.dense.weight, plain.encoder.layer[0].output.dense.weight
    )
    assert adapter_info(tmp_path / "a.safetensors") == {"rank": 2}


def test_head_json_naming_adapters_loads_them_in_torch_and_onnx(encoder: Path, tmp_path: Path) -> None:
    plain = hf.load_model(encoder).predict(TEXTS)
    headed = tiny_models.encoder_with_head(tmp_path / "m", layers=(-1, -2), seed=5)
    _adapters(headed, headed / "adapters.safetensors", seed=2)
    raw = json.loads((headed / "head.json").read_text(encoding="utf-8"))
    (headed / "head.json").write_text(
        json.dumps(raw | {"adapters": "adapters.safetensors"}), encoding="utf-8"
    )
    assert hf.HeadSpec.read(headed).adapters == "adapters.safetensors"
    tuned = hf.load_model(headed).predict(TEXTS)
    assert any(abs(tuned[i][k] - plain[i][k]) > 1e-3 for i in range(len(TEXTS)) for k in plain[i])
    onnx = hf.load_model(headed, runtime=hf.Runtime("onnx", tmp_path / "cache")).predict(TEXTS)
    for want, got in zip(tuned, onnx, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_a_new_adapter_file_makes_a_new_onnx_export(encoder: Path, tmp_path: Path) -> None:
    from classifiers.onnx import MANIFEST, ensure_onnx

    spec = hf.HeadSpec.read(encoder)
    cache = tmp_path / "cache"
    first = ensure_onnx(encoder, spec, "none", cache, _adapters(encoder, tmp_path / "a.safetensors", 1))
    second = ensure_onnx(encoder, spec, "none", cache, _adapters(encoder, tmp_path / "b.safetensors", 2))
    frozen = ensure_onnx(encoder, spec, "none", cache)
    assert len({first.parent, second.parent, frozen.parent}) == 3
    assert "-a" in first.parent.name and "-a" not in frozen.parent.name
    manifest = json.loads((first.parent / MANIFEST).read_text())
    assert manifest["adapters"] in first.parent.name and min(manifest["cosines"]) > 0.9999
    # The same adapter bytes reuse the export.
    again = ensure_onnx(encoder, spec, "none", cache, tmp_path / "a.safetensors")
    assert again == first

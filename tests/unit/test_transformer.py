"""``type: transformer`` with tiny random-weight models built here: loading, label mapping,
calibration, windows, batching, cache, and timeouts and ``on_error`` through the screener."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from classifiers import hf
from classifiers.onnx import OnnxHead
from classifiers.registry import builtin_registry
from classifiers.transformer import LabelMap, TransformerClassifier, calibrate
from gateway.policy_loader import load_policy
from gateway.screening import ERROR_CODE, Segment, screen
from tests.support import tiny_models

EN = "how do I kill a python process"
ZH = "你好，今天天气很好"


@pytest.fixture(scope="module")
def seqcls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.sequence_classifier(tmp_path_factory.mktemp("seqcls"))


@pytest.fixture(scope="module")
def headed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    label_map = {"toxic": {"code": "A.4.d", "threshold": 0.4}, "hate": {"code": "A.2.i", "threshold": 0.6}}
    return tiny_models.encoder_with_head(tmp_path_factory.mktemp("headed"), label_map=label_map)


def build(path: Path, **params: object) -> TransformerClassifier:
    registry = builtin_registry()
    raw = {"model": str(path), **params}
    clf = registry.build("clf", "transformer", registry.validate("transformer", raw, path))
    assert isinstance(clf, TransformerClassifier)
    return clf


def test_calibration_maps_threshold_to_one_half() -> None:
    assert calibrate(0.3, 0.3) == pytest.approx(0.5)
    assert calibrate(0.0, 0.3) == 0.0 and calibrate(1.0, 0.3) == pytest.approx(1.0)
    assert calibrate(0.15, 0.3) == pytest.approx(0.25)
    assert calibrate(0.65, 0.3) == pytest.approx(0.75)


def test_sequence_classifier_loads_with_its_labels(seqcls: Path) -> None:
    model = hf.load_model(seqcls)
    assert model.labels == tiny_models.LABELS and model.multi_label
    probs = model.predict([EN, ZH])
    assert [set(p) for p in probs] == [set(tiny_models.LABELS)] * 2
    assert all(0.0 <= v <= 1.0 for p in probs for v in p.values())
    assert probs[0] != probs[1]  # Chinese and English both reach the model as real tokens


def test_single_label_models_use_softmax(tmp_path: Path) -> None:
    model = hf.load_model(tiny_models.sequence_classifier(tmp_path, multi_label=False))
    for probs in model.predict([EN, ZH]):
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_activation_overrides_the_configs_problem_type(tmp_path: Path) -> None:
    """Multi-label models often leave problem_type unset; softmax would make their labels compete."""
    single = tiny_models.sequence_classifier(tmp_path / "single", multi_label=False)
    multi = tiny_models.sequence_classifier(tmp_path / "multi", multi_label=True)
    as_sigmoid = hf.load_model(single, activation="sigmoid")
    as_softmax = hf.load_model(multi, activation="softmax")
    assert as_sigmoid.multi_label and not as_softmax.multi_label
    for probs in as_softmax.predict([EN, ZH]):
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert any(abs(sum(p.values()) - 1.0) > 1e-3 for p in as_sigmoid.predict([EN, ZH]))
    with pytest.raises(ValueError, match="sigmoid"):
        hf.load_model(tiny_models.encoder_with_head(tmp_path / "head"), activation="softmax")


def test_batched_and_padded_predictions_equal_one_by_one(seqcls: Path) -> None:
    model = hf.load_model(seqcls, batch_size=2)
    texts = [EN, ZH, "a", EN * 3, "炸药配方是什么"]
    together = model.predict(texts)
    for text, probs in zip(texts, together, strict=True):
        alone = model.predict([text])[0]
        assert alone == pytest.approx(probs, abs=1e-5)


def test_long_text_is_split_into_windows_and_the_worst_counts(seqcls: Path) -> None:
    model = hf.load_model(seqcls, max_tokens=16, stride=4)
    text = "zorblax quick brown fox jumps over the lazy dog " * 3
    ids, owner = model.windows([text, "short"])
    assert len(ids) > 3 and all(len(w) <= 16 for w in ids)
    assert owner.count(0) == len(ids) - 1 and owner[-1] == 1
    probs = model.predict([text])[0]
    per_window = [
        model._forward(torch.tensor([w]), torch.ones(1, len(w), dtype=torch.long))[0] for w in ids[:-1]
    ]
    worst = torch.stack(per_window).amax(0).tolist()
    assert list(probs.values()) == pytest.approx(worst, abs=1e-5)


def test_encoder_with_head_uses_prefix_and_default_label_map(headed: Path) -> None:
    model = hf.load_model(headed)
    assert model.spec is not None and model.spec.prefix == "query: "
    ids, _ = model.windows(["hi"])
    assert len(ids[0]) == len("query:") + len("hi") + 2  # [CLS] q u e r y : h i [SEP]
    clf = build(headed)
    assert clf._labels == {
        "toxic": LabelMap(code="A.4.d", threshold=0.4),
        "hate": LabelMap(code="A.2.i", threshold=0.6),
    }


def test_int8_quantisation_keeps_scores_close(headed: Path) -> None:
    full = hf.load_model(headed).predict([EN, ZH])
    int8 = hf.load_model(headed, quantize=True)
    assert "DynamicQuantizedLinear" in repr(int8.model)
    for a, b in zip(full, int8.predict([EN, ZH]), strict=True):
        assert a == pytest.approx(b, abs=0.05)


async def test_scores_are_calibrated_per_label_and_merged_per_code(seqcls: Path) -> None:
    raw = hf.load_model(seqcls).predict([EN])[0]
    clf = build(
        seqcls,
        labels={"toxic": {"code": "A.4.d", "threshold": 0.3}, "hate": {"code": "A.4.d", "threshold": 0.7}},
    )
    [scores] = await clf.classify([EN])
    expected = max(calibrate(raw["toxic"], 0.3), calibrate(raw["hate"], 0.7))
    assert dict(scores.scores) == {"A.4.d": pytest.approx(expected, abs=1e-5)}
    assert scores.classifier == "clf" and scores.revision == seqcls.name
    await clf.aclose()


async def test_cache_by_normalised_text(seqcls: Path) -> None:
    clf = build(seqcls, labels={"toxic": {"code": "A.4.d"}})
    first = await clf.classify([EN, ZH, EN])
    assert (clf.misses, clf.hits) == (2, 0) and list(clf._batcher.batch_sizes) == [2]
    assert first[0] == first[2]
    # Full-width letters and a zero-width space normalise to the same text: served from cache.
    again = await clf.classify(["ｈｏｗ do I k\u200bill a python process", ZH])
    assert (clf.misses, clf.hits) == (2, 2) and again == first[:2]
    assert list(clf._batcher.batch_sizes) == [2]
    await clf.aclose()


async def test_concurrent_calls_share_forward_passes(seqcls: Path) -> None:
    clf = build(seqcls, labels={"toxic": {"code": "A.4.d"}}, cache_size=0)
    results = await asyncio.gather(*(clf.classify([f"text number {i}", f"第{i}条"]) for i in range(16)))
    assert len(results) == 16 and all(len(r) == 2 for r in results)
    sizes = list(clf._batcher.batch_sizes)
    assert sum(sizes) == 32 and len(sizes) < 16
    await clf.aclose()


def test_params_fail_fast(seqcls: Path, tmp_path: Path) -> None:
    registry = builtin_registry()
    with pytest.raises(ValidationError, match="not a built-in model"):
        registry.validate("transformer", {"model": "no-such-model"}, tmp_path)
    with pytest.raises(ValidationError, match="Extra inputs"):
        registry.validate("transformer", {"model": str(seqcls), "temperature": 1}, tmp_path)
    with pytest.raises(ValueError, match="not in the model"):
        build(seqcls, labels={"violence": {"code": "A.1.f"}})
    with pytest.raises(ValueError, match="no default label map"):
        build(seqcls)
    relative = registry.validate("transformer", {"model": seqcls.name}, seqcls.parent)
    assert Path(relative.model) == seqcls  # type: ignore[attr-defined]


def policy_with(tmp_path: Path, model: Path, **extra: str) -> str:
    lines = [f"{k}: {v}" for k, v in extra.items()]
    text = "\n".join(
        [
            "name: tiny",
            "classifiers:",
            "  guard:",
            "    type: transformer",
            f"    model: {model}",
            "    labels: {toxic: {code: A.4.d, threshold: 0.001}}",
            "rules:",
            "  A.4.d: {input: refuse, output: block}",
            *lines,
        ]
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


async def test_screening_with_a_transformer_in_both_languages(seqcls: Path, tmp_path: Path) -> None:
    policy = load_policy(policy_with(tmp_path, seqcls))
    decision = await screen(policy, [Segment(EN, "user"), Segment(ZH, "user")], "input")
    # threshold 0.001: any probability of "toxic" fires, in both languages.
    assert decision.action == "refuse"
    assert sorted(h.segment for h in decision.hits) == [0, 1]
    assert {h.classifier for h in decision.hits} == {"guard"}


@pytest.mark.parametrize(("on_error", "action"), [("block", "block"), ("allow", "allow"), ("flag", "flag")])
async def test_slow_model_times_out_and_on_error_decides(
    seqcls: Path, tmp_path: Path, on_error: str, action: str
) -> None:
    policy = load_policy(policy_with(tmp_path, seqcls, on_error=on_error, classifier_timeout_s="0.05"))
    guard = policy.classifiers["guard"]
    assert isinstance(guard, TransformerClassifier)
    gate = threading.Event()
    predict = guard._batcher._predict
    guard._batcher._predict = lambda texts: (gate.wait(5), predict(texts))[1]
    decision = await screen(policy, [Segment(EN, "user")], "input")
    gate.set()
    assert decision.action == action
    if action != "allow":
        assert [h.code for h in decision.hits] == [ERROR_CODE]
    await guard.aclose()


@pytest.fixture(scope="module")
def headed_layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.encoder_with_head(tmp_path_factory.mktemp("layers"), layers=(-1, -2), seed=3)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_onnx_runtime_reproduces_the_torch_encoder(
    headed_layers: Path, tmp_path: Path, quantize: str
) -> None:
    texts = [EN, ZH, "短", EN + " " + ZH * 3]
    expected = hf.load_model(headed_layers, quantize=quantize == "int8").predict(texts)
    runtime = hf.Runtime("onnx", tmp_path / "cache")
    model = hf.load_model(headed_layers, quantize=quantize == "int8", runtime=runtime)
    assert model.model is None and model.features is not None  # no torch encoder weights loaded
    assert isinstance(model.head, OnnxHead)  # torch's threads stay asleep
    built = [p.name for p in (tmp_path / "cache" / "onnx").iterdir() if not p.name.startswith(".")]
    assert len(built) == 1 and f"-L-1_-2-mean-{quantize}-ort" in built[0]
    tolerance = 1e-4 if quantize == "none" else 0.05
    for want, got in zip(expected, model.predict(texts), strict=True):
        assert got == pytest.approx(want, abs=tolerance)
    again = hf.load_model(headed_layers, quantize=quantize == "int8", runtime=runtime)  # reuses the build
    for a, b in zip(again.predict(texts), model.predict(texts), strict=True):
        assert a == pytest.approx(b)
    assert len([p for p in (tmp_path / "cache" / "onnx").iterdir() if not p.name.startswith(".")]) == 1


def test_onnx_runtime_through_the_classifier_in_both_languages(headed: Path, tmp_path: Path) -> None:
    torch_clf = build(headed, cache_size=0)
    onnx_clf = build(headed, cache_size=0, runtime="onnx", encoder_cache=str(tmp_path))
    got = asyncio.run(onnx_clf.classify([EN, ZH]))
    want = asyncio.run(torch_clf.classify([EN, ZH]))
    for a, b in zip(got, want, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)


def test_onnx_runtime_refuses_sequence_classifiers(seqcls: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="encoder \\+ head"):
        hf.load_model(seqcls, runtime=hf.Runtime("onnx", tmp_path))


def test_onnx_head_computes_what_the_torch_head_does() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))
    features = torch.randn(5, 12)
    with torch.inference_mode():
        want = mlp(features)
    assert OnnxHead(mlp)(features).numpy() == pytest.approx(want.numpy(), abs=1e-5)
    with pytest.raises(ValueError, match="ReLU"):
        OnnxHead(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
    with pytest.raises(ValueError, match="exact GELU"):
        OnnxHead(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU(approximate="tanh")))


def test_length_buckets_cover_every_text_once_and_cut_padding() -> None:
    spread = sorted([8, 9, 10, 12, 20, 22, 24, 40, 41, 44, 60, 62, 64] * 3)
    spans = hf.length_buckets(spread, max_batch=32)
    assert spans[0][0] == 0 and spans[-1][1] == len(spread)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(0 < end - start <= 32 for start, end in spans)
    padded = sum((end - start) * spread[end - 1] for start, end in spans)
    assert len(spans) > 1 and padded < len(spread) * 64 * 0.75
    # Equal lengths gain nothing from a split: one pass, up to max_batch texts each.
    assert hf.length_buckets([64] * 32, max_batch=32) == [(0, 32)]
    capped = hf.length_buckets([64] * 40, max_batch=16)
    assert len(capped) == 3 and all(end - start <= 16 for start, end in capped)
    assert hf.length_buckets([], max_batch=4) == []

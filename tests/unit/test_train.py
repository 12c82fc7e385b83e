"""``python -m classifiers.train`` end to end on tiny fixture data and a tiny random encoder:
the head it writes loads as a classifier and scores Chinese and English; helpers tested alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from classifiers import hf, train
from classifiers.training.finetune import BUCKET_POOL, _bucketed
from classifiers.training.fit import binary_metrics, choose_threshold, label_matrix
from classifiers.transformer import LabelMap, TransformerClassifier
from tests.support import tiny_models
from tests.unit.test_training_sources import WRITTEN, _en_harmful_sets, _en_sets, _jsonl, _zh_sets


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    _zh_sets(data)
    _en_harmful_sets(data)
    _en_sets(data)
    _jsonl(root / "written/a.jsonl", WRITTEN)
    encoder = tiny_models.encoder_with_head(root / "encoder")  # its own head is ignored here
    out = root / "guard"
    args = [
        "--data",
        str(data),
        "--written",
        str(root / "written"),
        "--out",
        str(out),
        "--encoder",
        str(encoder),
        "--cache",
        str(root / "cache"),
        "--epochs",
        "3",
        "--hidden",
        "8",
        "--layers=-1,-2",
        "--finetune-layers",
        "0",
        "--no-answers",
    ]
    train.main(args)
    return out, encoder, root


def test_training_writes_head_card_and_metrics(trained: tuple[Path, Path, Path]) -> None:
    out, _, root = trained
    head = json.loads((out / "head.json").read_text(encoding="utf-8"))
    assert head["labels"][0] == "harmful" and head["hidden"] == [8] and head["layers"] == [-1, -2]
    assert head["label_map"]["disc_region"]["code"] == "A.2.d"
    assert all(0 < m["threshold"] < 1 for m in head["label_map"].values())
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert {"targets", "sources", "labels", "overall"} <= set(metrics)
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "| cold | Apache-2.0 | zh |" in card and head["revision"] in card
    assert list((root / "cache" / "features").glob("features-*.pt"))  # a rerun skips the encoder


async def test_the_written_head_loads_and_scores_both_languages(trained: tuple[Path, Path, Path]) -> None:
    out, encoder, _ = trained
    # The head was trained on the tiny encoder: load it with that one instead of e5.
    model = hf.load_model(out, encoder=encoder)
    clf = TransformerClassifier("guard", model.predict, _labels(out), model=model)
    for scores in await clf.classify(["你好，今天天气很好", "hello there"]):
        assert {"X.harmful", "A.2.d", "X.jailbreak"} <= set(scores.scores)
        assert all(0.0 <= v <= 1.0 for v in scores.scores.values())
    await clf.aclose()


def _labels(out: Path) -> dict[str, LabelMap]:
    raw = json.loads((out / "head.json").read_text(encoding="utf-8"))["label_map"]
    return {k: LabelMap.model_validate(v) for k, v in raw.items()}


def test_label_matrix_masks_what_a_source_does_not_say() -> None:
    labels = ("harmful", "illegal", "discrimination", "disc_region", "disc_gender")
    y, known = label_matrix(
        [frozenset(), frozenset({"harmful"}), frozenset({"harmful", "discrimination"}),
         frozenset({"harmful", "discrimination", "disc_region"})],
        labels,
    )  # fmt: skip
    assert y.tolist() == [[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 1, 0, 0], [1, 0, 1, 1, 0]]
    assert known.tolist() == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    # Personal information alone is not harmful: the privacy label learns it, "harmful" does not.
    y, _ = label_matrix([frozenset({"harmful", "privacy"})], ("harmful", "privacy"))
    assert y.tolist() == [[0, 1]]


def test_choose_threshold_by_f1_or_by_false_positive_budget() -> None:
    scores = torch.tensor([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    truth = torch.tensor([0, 0, 1, 0, 1, 1])
    best = choose_threshold(scores, truth)
    assert binary_metrics(scores, truth, best).f1 == pytest.approx(0.8571, abs=1e-3)
    budget = choose_threshold(scores, truth, max_fpr=0.0)
    m = binary_metrics(scores, truth, budget)
    assert m.fpr == 0.0 and m.recall == pytest.approx(2 / 3)
    assert choose_threshold(scores, torch.zeros(6)) == 0.5  # nothing to separate


def test_metrics_divisions_by_zero_are_none() -> None:
    m = binary_metrics(torch.tensor([0.1, 0.2]), torch.tensor([0, 0]), 0.5)
    assert m.recall is None and m.precision is None and m.f1 is None and m.fpr == 0.0
    assert m.as_dict()["accuracy"] == 1.0


def test_training_with_a_tuned_encoder_ships_adapters_that_load(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, encoder, root = trained
    out = tmp_path / "tuned"
    args = ["--data", str(root / "data"), "--written", str(root / "written"), "--out", str(out),
            "--encoder", str(encoder), "--cache", str(tmp_path / "cache"), "--epochs", "2", "--hidden", "8",
            "--no-answers", "--layers=-1,-2", "--finetune-layers", "1", "--lora-rank", "2",
            "--finetune-examples", "200", "--finetune-max-tokens", "32"]  # fmt: skip
    train.main(args)
    head = json.loads((out / "head.json").read_text(encoding="utf-8"))
    assert head["adapters"] == "adapters.safetensors" and (out / head["adapters"]).is_file()
    tuning = head["finetune"]
    assert tuning["tuned_layers"] == [1] and tuning["rank"] == 2 and tuning["seed"] == 13
    assert 0 < tuning["texts"] <= 200 and tuning["steps"] > 0
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "LoRA" in card and "encoder layers 1 (0 is the first)" in card
    # The ONNX export the head was trained on carries the adapters' hash in its name.
    assert [
        p for p in (tmp_path / "cache" / "onnx").iterdir() if "-a" in p.name and not p.name.startswith(".")
    ]
    model = hf.load_model(out, encoder=encoder)
    assert model.predict(["你好"])[0].keys() == set(head["labels"])
    # Training again without tuning removes the stale adapters, which the new head was not trained with.
    train.main([*args[:-8], "--finetune-layers", "0"])
    assert not (out / "adapters.safetensors").exists()
    assert "adapters" not in json.loads((out / "head.json").read_text(encoding="utf-8"))


def test_every_layer_tuned_starts_from_the_embeddings(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, encoder, root = trained
    out = tmp_path / "all"
    train.main(["--data", str(root / "data"), "--written", str(root / "written"), "--out", str(out),
                "--encoder", str(encoder), "--cache", str(tmp_path / "cache"), "--epochs", "2",
                "--no-answers", "--hidden", "8", "--layers=-1,-2", "--finetune-layers", "2",
                "--lora-rank", "2", "--finetune-examples", "100", "--finetune-max-tokens", "32"])  # fmt: skip
    tuning = json.loads((out / "head.json").read_text(encoding="utf-8"))["finetune"]
    assert tuning["tuned_layers"] == [0, 1] and tuning["steps"] > 0
    assert hf.load_model(out, encoder=encoder).predict(["你好", "hello"])[0].keys()


def test_fine_tuning_batches_hold_texts_of_about_one_length() -> None:
    lengths = [(i * 37) % 90 + 1 for i in range(1000)]
    ids = [[7] * n for n in lengths]
    batches = _bucketed(ids, 8, torch.Generator().manual_seed(3))
    assert sorted(i for b in batches for i in b) == list(range(1000))  # each text once per epoch
    assert all(len(b) <= 8 for b in batches)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 90 / BUCKET_POOL * 2  # random batches of 8 would spread about 70 tokens
    assert batches == _bucketed(ids, 8, torch.Generator().manual_seed(3))
    assert batches != _bucketed(ids, 8, torch.Generator().manual_seed(4))

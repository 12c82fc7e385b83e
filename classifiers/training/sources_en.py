"""Readers for the English data sets (arena-hard also carries some Chinese prompts).

Each reader takes the data set's folder and yields `Record`s; the folder READMEs under the shared
data directory document the files, fields and labels these readers rely on.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator
from pathlib import Path

from .records import (
    BENIGN,
    Record,
    guess_lang,
    harmful,
    normalise_key,
    read_csv,
    read_json,
    read_jsonl,
    with_input,
)

__all__ = [
    "read_advbench",
    "read_arena_hard",
    "read_clinc150",
    "read_davidson",
    "read_diasafety",
    "read_gptfuzz",
    "read_harmbench",
    "read_harmful_prompts_misc",
    "read_nq_open",
    "read_presidio",
    "read_refusal_direction",
    "read_self_instruct",
    "read_tensor_trust",
    "read_toxigen",
]


def read_davidson(folder: Path) -> Iterator[Record]:
    path = folder / "labeled_data.csv"
    classes = {"0": harmful("discrimination"), "1": harmful("insult"), "2": BENIGN}
    for row in read_csv(path):
        # The tweets are HTML-escaped (&amp;, &#128514;); a gateway sees the characters themselves.
        text = html.unescape(row["tweet"])
        yield Record(text, "en", "davidson-hate-offensive", "davidson", "MIT", classes[row["class"]])


# LGBTQ, bisexual and trans people are grouped under gender: the head has no sexual-orientation label.
_TOXIGEN_GROUPS: dict[str, tuple[str, ...]] = {
    "asian": ("disc_ethnicity",),
    "black": ("disc_ethnicity",),
    "latino": ("disc_ethnicity",),
    "native_american": ("disc_ethnicity",),
    "middle_east": ("disc_ethnicity",),
    "chinese": ("disc_ethnicity", "disc_nationality"),
    "mexican": ("disc_ethnicity", "disc_nationality"),
    "jewish": ("disc_ethnicity", "disc_belief"),
    "muslim": ("disc_belief",),
    "women": ("disc_gender",),
    "lgbtq": ("disc_gender",),
    "bisexual": ("disc_gender",),
    "trans": ("disc_gender",),
    "mental_disability": ("disc_health",),
    "physical_disability": ("disc_health",),
    "immigrant": ("disc_nationality",),
}


def _toxigen_record(text: str, label: str, group: str) -> Record:
    labels = harmful("discrimination", *_TOXIGEN_GROUPS[group]) if label == "hate" else BENIGN
    return Record(text, "en", "toxigen", "toxigen", "CDLA-Permissive-2.0", labels)


def read_toxigen(folder: Path) -> Iterator[Record]:
    for row in read_csv(folder / "toxigen_prompt_sentences.csv"):
        yield _toxigen_record(row["text"], row["label"], row["target_group"])
    # demonstrations/<type>/{hate,neutral}_<group>[_sentences].txt: mostly the same sentences again
    for path in sorted((folder / "demonstrations").glob("*/*.txt")):
        label, _, group = path.stem.partition("_")
        group = group.removesuffix("_sentences")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield _toxigen_record(line.strip(), label, group)


# HarmBench, StrongREJECT and JailbreakBench category names -> head categories. Names with no head
# category (misinformation, copyright, "harmful", expert advice ...) leave just "harmful". Combined
# hate-and-harassment categories map to discrimination: their prompts target groups, not persons.
_CATEGORIES: dict[str, tuple[str, ...]] = {
    "cybercrime_intrusion": ("illegal",),
    "illegal": ("illegal",),
    "chemical_biological": ("illegal",),
    "harassment_bullying": ("insult",),
    "harmful": (),
    "misinformation_disinformation": (),
    "copyright": (),
    "Violence": ("violence",),
    "Non-violent crimes": ("illegal",),
    "Illegal goods and services": ("illegal",),
    "Hate, harassment and discrimination": ("discrimination",),
    "Sexual content": ("sexual",),
    "Disinformation and deception": (),
    "Harassment/Discrimination": ("discrimination",),
    "Malware/Hacking": ("illegal",),
    "Physical harm": ("violence",),
    "Economic harm": (),
    "Fraud/Deception": ("illegal",),
    "Disinformation": (),
    "Sexual/Adult content": ("sexual",),
    "Privacy": ("privacy",),
    "Expert advice": (),
    "Government decision-making": (),
}


def _category_labels(category: str | None, path: Path) -> frozenset[str]:
    if not category:
        return harmful()
    try:
        return harmful(*_CATEGORIES[category])
    except KeyError:
        raise ValueError(f"{path}: unknown harm category {category!r}") from None


def _behaviour_text(row: dict[str, str]) -> str:
    # HarmBench's own layout for contextual behaviours: the passage, a rule, then the request.
    context = row.get("ContextString", "").strip()
    return f"{context}\n\n---\n\n{row['Behavior']}" if context else row["Behavior"]


def read_harmbench(folder: Path) -> Iterator[Record]:
    # val is held out whole (recall on unseen behaviours); test is hash-split. The polite rephrasing
    # of a behaviour shares its BehaviorID group, so it never sits on the other side of the split.
    held_out: dict[str, str | None] = {}
    for name, split in (
        ("harmbench_behaviors_text_val.csv", "dev"),
        ("harmbench_behaviors_text_test.csv", None),
    ):
        path = folder / name
        for row in read_csv(path):
            held_out[row["BehaviorID"]] = split
            labels = _category_labels(row["SemanticCategory"], path)
            group = f"harmbench:{row['BehaviorID']}"
            yield Record(_behaviour_text(row), "en", "harmbench", "harmbench", "MIT", labels, split, group)
    path = folder / "harmbench_behaviors_polite.csv"
    for row in read_csv(path):
        labels = _category_labels(row["SemanticCategory"], path)
        split, group = held_out.get(row["BehaviorID"]), f"harmbench:{row['BehaviorID']}"
        yield Record(_behaviour_text(row), "en", "harmbench", "harmbench_polite", "MIT", labels, split, group)


def read_advbench(folder: Path) -> Iterator[Record]:
    for row in read_csv(folder / "advbench_behaviors.csv"):
        yield Record(row["Behavior"], "en", "advbench", "advbench", "MIT", harmful())


def malicious_instruct_keys(misc_folder: Path) -> frozenset[str]:
    """MaliciousInstruct prompts have no verified licence, wherever a copy of them turns up."""
    lines = (misc_folder / "malicious_instruct.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(normalise_key(line) for line in lines if line.strip())


def read_harmful_prompts_misc(folder: Path) -> Iterator[Record]:
    source, unverified = "harmful-prompts-misc", malicious_instruct_keys(folder)
    path = folder / "strongreject_dataset.csv"
    for row in read_csv(path):
        text = row["forbidden_prompt"]
        licence = "NOASSERTION" if normalise_key(text) in unverified else "MIT"
        yield Record(text, "en", source, "strongreject", licence, _category_labels(row["category"], path))
    for name, subset in (
        ("tdc2023_test_phase_behaviors.csv", "tdc2023"),
        ("adv_training_behaviors.csv", "harmbench_adv"),
    ):
        for row in read_csv(folder / name):
            yield Record(row["Behavior"], "en", source, subset, "MIT", harmful())
    for line in (folder / "malicious_instruct.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield Record(line.strip(), "en", source, "malicious_instruct", "NOASSERTION", harmful())


def read_refusal_direction(folder: Path) -> Iterator[Record]:
    # Arditi et al.'s splits are random, and their harmful half copies HarmBench, AdvBench and
    # StrongREJECT, whose own splits must win: these records take no split of their own.
    source = "refusal-direction-harmful-harmless"
    unverified = malicious_instruct_keys(folder.parent / "harmful-prompts-misc")
    for part in ("train", "val", "test"):
        path = folder / f"harmful_{part}.json"
        for row in read_json(path):
            text = row["instruction"]
            licence = "NOASSERTION" if normalise_key(text) in unverified else "Apache-2.0"
            labels = _category_labels(row["category"], path)
            yield Record(text, "en", source, "refusal_harmful", licence, labels)
        for row in read_json(folder / f"harmless_{part}.json"):
            yield Record(row["instruction"], "en", source, "alpaca", "CC-BY-NC-4.0", BENIGN)


GPTFUZZ_FILLS = 3  # harmful questions substituted into each jailbreak template
_PLACEHOLDER = "[INSERT PROMPT HERE]"


def _pick_questions(template_key: str, count: int) -> list[int]:
    # A fixed pseudo-random choice per template, independent of the split seed.
    def rank(q: int) -> str:
        return hashlib.sha1(f"{template_key}:{q}".encode()).hexdigest()

    return sorted(range(count), key=rank)[:GPTFUZZ_FILLS]


def read_gptfuzz(folder: Path) -> Iterator[Record]:
    questions = [row["text"] for row in read_csv(folder / "question_list.csv")]
    for question in questions:
        yield Record(question, "en", "gptfuzz-jailbreak", "gptfuzz_question", "MIT", harmful())
    templates = [(f"full:{row['id']}", row["text"]) for row in read_csv(folder / "GPTFuzzer.csv")]
    templates += [(f"short:{i}", row["text"]) for i, row in enumerate(read_csv(folder / "seed_short_25.csv"))]
    for key, template in templates:
        for q in _pick_questions(key, len(questions)):
            text = template.replace(_PLACEHOLDER, questions[q])
            group = f"gptfuzz:{key}"  # fills of one template are near-duplicates: one split
            yield Record(
                text, "en", "gptfuzz-jailbreak", "gptfuzz_template", "MIT", harmful("jailbreak"), None, group
            )


def read_tensor_trust(folder: Path) -> Iterator[Record]:
    for kind in ("hijacking", "extraction"):
        for row in read_jsonl(folder / f"{kind}_robustness_dataset.jsonl"):
            subset = f"tensor_trust_{kind}"
            yield Record(
                row["attack"], "en", "tensor-trust-injection", subset, "NOASSERTION", harmful("jailbreak")
            )


# Risk Ignorance contexts are distress posts; only about a fifth speak of suicide or self-harm, and a
# post about loneliness labelled self_harm would teach the head to flag people asking for support.
_SELF_HARM = re.compile(
    r"\b(suicid\w*|kill(ing)? (my ?self|me)|end(ing)? (it all|my life|myself|everything|things)|"
    r"(want|wanna|wish|going|ready|deserve) (to )?die|(wish|want) (i was|i were|to be|i'?m) dead|"
    r"better off dead|cut(ting)? (my ?self|my (wrists?|arms?|legs?|thighs?))|self[- ]?harm\w*|"
    r"hang(ing)? myself|overdos\w*|(don'?t|do not|no longer) want to (live|be alive|exist|wake up)|"
    r"never (have to )?wake up|reason to live)\b",
    re.IGNORECASE,
)


def read_diasafety(folder: Path) -> Iterator[Record]:
    # Only user contexts: the responses are model output, and their labels judge the response.
    for part, split in (("train", "train"), ("val", "dev"), ("test", "dev")):
        for row in read_json(folder / f"{part}.json"):
            if row["category"] == "Risk Ignorance" and _SELF_HARM.search(row["context"]):
                labels = harmful("self_harm")
                yield Record(
                    row["context"], "en", "diasafety-en", "diasafety_risk", "Apache-2.0", labels, split
                )


_DIRECT_IDENTIFIERS = frozenset(
    ("CREDIT_CARD", "US_SSN", "IBAN_CODE", "PHONE_NUMBER", "EMAIL_ADDRESS", "STREET_ADDRESS",
     "US_DRIVER_LICENSE", "IP_ADDRESS")
)  # fmt: skip


def read_presidio(folder: Path) -> Iterator[Record]:
    for row in read_json(folder / "synth_dataset_v2.json"):
        kinds = {span["entity_type"] for span in row["spans"]}
        labels = harmful("privacy") if kinds & _DIRECT_IDENTIFIERS else BENIGN
        group = f"presidio:{row['template_id']}"  # one template's fillings are near-duplicates
        licence = "MIT AND CC-BY-SA-3.0-US"
        yield Record(
            row["full_text"], "en", "presidio-synth-pii-en", "presidio", licence, labels, None, group
        )


def read_arena_hard(folder: Path) -> Iterator[Record]:
    for name in ("arena-hard-v0.1_question.jsonl", "arena-hard-v2.0_question.jsonl"):
        for row in read_jsonl(folder / name):
            lang = guess_lang(row["prompt"])
            if lang is not None:  # Russian, Japanese and Korean prompts: neither head language
                yield Record(row["prompt"], lang, "arena-hard-prompts", "arena_hard", "Apache-2.0", BENIGN)


def read_self_instruct(folder: Path) -> Iterator[Record]:
    source = "self-instruct-en"
    for row in read_jsonl(folder / "seed_tasks.jsonl"):
        text = with_input(row["instruction"], row["instances"])
        yield Record(text, "en", source, "self_instruct_seed", "Apache-2.0", BENIGN)
    # The authors ask that these never be trained on: evaluation (false positives) only.
    for row in read_jsonl(folder / "user_oriented_instructions.jsonl"):
        text = with_input(row["instruction"], row["instances"])
        yield Record(text, "en", source, "self_instruct_user", "Apache-2.0", BENIGN, "dev")


def read_clinc150(folder: Path) -> Iterator[Record]:
    for row in read_csv(folder / "clinc150_data_full.csv"):
        split = "train" if row["split"] in ("train", "oos_train") else "dev"
        yield Record(row["text"], "en", "clinc150-en", "clinc150", "CC-BY-3.0", BENIGN, split)


def read_nq_open(folder: Path) -> Iterator[Record]:
    for row in read_csv(folder / "nq_open_questions.csv"):
        yield Record(row["question"], "en", "nq-open-en", "nq_open", "CC-BY-SA-3.0", BENIGN)

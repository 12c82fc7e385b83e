"""Our own written examples (``data/written``, and with ``--answers`` ``data/answers``): rows of
``{"text", "lang", "label", "category", "style"}`` mapped onto head labels and subsets."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path

from .records import HEAD_LABELS, Record, harmful, normalise_key

__all__ = ["ANSWER", "GENERAL", "WRITTEN_CATEGORIES", "answer_windows", "framed", "read_written"]

logger = logging.getLogger(__name__)


# Written-example category -> head labels of a harmful row. Benign rows (look-alikes) name the
# category they imitate and carry no labels.
WRITTEN_CATEGORIES: Mapping[str, frozenset[str]] = {
    **dict.fromkeys(("cyber_chem_bio", "gambling", "fraud", "drugs", "weapons"), harmful("illegal")),
    "sexual": harmful("sexual"),
    "terrorism": harmful("terrorism", "violence"),
    "self_harm": harmful("self_harm"),
    "threat": harmful("violence"),
    "insult": harmful("insult"),
    **{c: harmful("discrimination", c) for c in HEAD_LABELS if c.startswith("disc_")},
}


#: Category of written benign rows that imitate no harmful category: everyday requests to an
#: assistant ("请帮我写一封请假邮件"), phrased like the harmful requests so the head does not learn
#: "a request" as the signal.
GENERAL = "general"


#: Style of written benign rows that are an assistant's answers (not requests): whole, and cut
#: into windows as the stream guard shows them to a model.
ANSWER = "answer"
#: Windows cut from each written answer, and their length range in characters: a stream window
#: is ``model_context_chars`` (200) before the new text, cut at any character, mid-word too.
ANSWER_WINDOWS = 6
WINDOW_CHARS = (30, 260)


def answer_windows(record: Record) -> list[Record]:
    """Windows of a written answer, seeded by its text, in the answer's group (so they share its
    split): one from the start (a stream's first checks) and the rest from anywhere."""
    text = record.text
    low, high = WINDOW_CHARS
    if len(text) <= low:
        return []
    rng = random.Random(hashlib.sha1(text.encode()).digest())
    out = []
    for n in range(ANSWER_WINDOWS):
        size = rng.randint(low, min(high, len(text) - 1))
        start = 0 if n == 0 else rng.randint(0, len(text) - size)
        window = text[start : start + size].strip()
        if window:
            out.append(Record(window, record.lang, record.source, "answer_windows", record.licence,
                              frozenset(), group=record.group))  # fmt: skip
    return out


#: Framed copies of each written answer (benign and harmful), and how many generic lead-ins come
#: before it: a model's answer often opens with prose that says nothing ("Sure, here is the next
#: part:"), and a head that saw harm only in bare answers let such an opening outweigh it.
FRAMES = 2
FRAME_LEAD_INS = (1, 3)


def framed(record: Record, frames: Mapping[str, Mapping[str, list[str]]]) -> list[Record]:
    """Copies of an answer inside generic lead-ins (and half the time a tail) from `frames`
    (``{lang: {"lead_ins": [...], "tails": [...]}}``), seeded by its text, in the answer's group
    and with its labels: a frame changes neither what the answer is nor its split."""
    pool = frames.get(record.lang)
    if not pool:
        return []
    rng = random.Random(hashlib.sha1(b"frame\x00" + record.text.encode()).digest())
    join = "" if record.lang == "zh" else " "
    out = []
    for _ in range(FRAMES):
        parts = [*rng.sample(pool["lead_ins"], rng.randint(*FRAME_LEAD_INS)), record.text]
        if rng.random() < 0.5:
            parts.append(rng.choice(pool["tails"]))
        out.append(Record(join.join(parts), record.lang, record.source, "framed_answers", record.licence,
                          record.labels, group=record.group))  # fmt: skip
    return out


def read_frames(folder: Path) -> dict[str, dict[str, list[str]]]:
    """`frames.json` of a folder of answers: generic lead-ins and tails per language ({} if none)."""
    path = folder / "frames.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    for lang, pool in data.items():
        if lang not in ("zh", "en") or set(pool) != {"lead_ins", "tails"} or not all(pool.values()):
            raise ValueError(f"{path}: {lang!r} needs non-empty 'lead_ins' and 'tails' only")
    return {lang: {k: list(v) for k, v in pool.items()} for lang, pool in data.items()}


def read_written(folder: Path) -> list[Record]:
    """Our own examples, `*.jsonl` in `folder`; a missing folder is an empty set (it is being written).

    A malformed line raises ValueError naming the file and line: a silently skipped line would be a
    silently missing category.
    """
    if not folder.is_dir():
        logger.warning("no written examples folder", extra={"path": str(folder)})
        return []
    records = []
    frames = read_frames(folder)
    for path in sorted(folder.glob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        record = _written_record(json.loads(line))
                    except (ValueError, TypeError, KeyError) as exc:
                        raise ValueError(f"{path}:{number}: malformed written example: {exc}") from exc
                    records.append(record)
                    if record.subset == "answers":
                        records += answer_windows(record)
                    if record.subset in ("answers", "harmful_answers"):
                        records += framed(record, frames)
    return records


def _written_record(row: object) -> Record:
    if not isinstance(row, dict):
        raise TypeError("not a JSON object")
    text, lang, label, category = row["text"], row["lang"], row["label"], row["category"]
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    general = label == "benign" and category == GENERAL  # ordinary requests, not look-alikes
    if (
        lang not in ("zh", "en")
        or label not in ("harmful", "benign")
        or (category not in WRITTEN_CATEGORIES and not general)
    ):
        raise ValueError(f"bad lang/label/category {lang!r}/{label!r}/{category!r}")
    if not isinstance(row.get("style", ""), str):
        raise ValueError("style must be a string")
    if label == "benign" and row.get("style") == ANSWER:
        group = f"answer:{normalise_key(text)}"
        return Record(text, lang, "written", "answers", "own", frozenset(), group=group)
    if general:
        return Record(text, lang, "written", "requests", "own", frozenset())
    if label == "benign":
        return Record(text, lang, "written", "lookalike", "own", frozenset())
    # Harmful answers are measured apart from harmful requests: they are what output screening
    # must stop, and without them the head learned the shape of an answer as benign.
    if row.get("style") == ANSWER:
        group = f"answer:{normalise_key(text)}"  # its framed copies share its split
        return Record(
            text, lang, "written", "harmful_answers", "own", WRITTEN_CATEGORIES[category], group=group
        )
    return Record(text, lang, "written", "written", "own", WRITTEN_CATEGORIES[category])

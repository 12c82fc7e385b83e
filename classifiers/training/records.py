"""Raw records as the per-data-set readers yield them, before splitting and deduplication.

Shared by `sources_zh`, `sources_en` and `sources` so that the readers do not import the loader.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BENIGN",
    "HEAD_LABELS",
    "LICENCES",
    "Record",
    "Variant",
    "guess_lang",
    "harmful",
    "is_permissive",
    "normalise_key",
    "read_csv",
    "read_json",
    "read_jsonl",
    "with_input",
]

HEAD_LABELS = ("harmful", "terrorism", "violence", "sexual", "illegal", "self_harm", "jailbreak", "privacy",
               "insult", "discrimination", "disc_ethnicity", "disc_belief", "disc_nationality", "disc_region",
               "disc_gender", "disc_age", "disc_occupation", "disc_health")  # fmt: skip

BENIGN: frozenset[str] = frozenset()

Variant = Literal["default", "research"]

# SPDX-like id -> may a commercially shipped model be trained on it. Share-alike counts as permissive
# (the data's README: acceptable, but named in the model card). An id missing here is a bug: fail loudly.
LICENCES: dict[str, bool] = {
    "MIT": True,
    "Apache-2.0": True,
    "CDLA-Permissive-2.0": True,
    "CC-BY-3.0": True,
    "CC-BY-SA-3.0": True,
    "CC-BY-SA-4.0": True,
    "MIT AND CC-BY-SA-3.0-US": True,
    "own": True,
    "CC-BY-NC-4.0": False,
    "CC-BY-NC-ND-4.0": False,
    "LicenseRef-BELLE-research-only": False,
    "NOASSERTION": False,
}


def is_permissive(licence: str) -> bool:
    try:
        return LICENCES[licence]
    except KeyError:
        raise ValueError(f"unknown licence id {licence!r}") from None


@dataclass(frozen=True, slots=True)
class Record:
    """One labelled text from a data set, with the data set's own split if it has one."""

    text: str
    lang: str
    source: str
    subset: str
    licence: str
    labels: frozenset[str]
    split: str | None = None  # "train" / "dev" from the data set; None: decided by hash
    group: str | None = None  # records sharing a group land in one split (translations, rephrasings)


def harmful(*categories: str) -> frozenset[str]:
    return frozenset(("harmful", *categories))


_SPACE = re.compile(r"\s+")


def normalise_key(text: str) -> str:
    """The identity of a text for deduplication and splitting: NFKC, lower case, whitespace collapsed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA_HANGUL = re.compile(r"[\u3040-\u30ff\u1100-\u11ff\uac00-\ud7af]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_LATIN = re.compile(r"[A-Za-z]")


def guess_lang(text: str) -> str | None:
    """'zh', 'en', or None for text in neither (Japanese, Korean, Russian): only for mixed sets.

    Three Han characters make a text Chinese even inside code, because the instruction around the
    code is what the user wrote; kana or hangul mark Japanese or Korean, which share Han characters.
    """
    if _KANA_HANGUL.search(text):
        return None
    if len(_CYRILLIC.findall(text)) > len(_LATIN.findall(text)):
        return None
    return "zh" if len(_CJK.findall(text)) >= 3 else "en"


def read_csv(path: Path) -> Iterator[dict[str, str]]:
    # utf-8-sig: several files (COLD, SWSR, MultiJail) start with a byte-order mark.
    with path.open(encoding="utf-8-sig", newline="") as fh:
        yield from csv.DictReader(fh)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row: dict[str, Any] = json.loads(line)
                yield row


def read_json(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        rows: list[dict[str, Any]] = json.load(fh)
    return rows


def with_input(instruction: str, instances: list[dict[str, str]]) -> str:
    """A self-instruct style task as a user would send it: the instruction plus its first input."""
    given = instances[0].get("input", "").strip() if instances else ""
    return f"{instruction}\n\n{given}" if given else instruction

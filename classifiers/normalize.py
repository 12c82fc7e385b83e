"""Text normalisation shared by every local classifier, with a map back to original offsets.

Evasion tricks change how text is *encoded* without changing what a reader sees: full-width
letters, zero-width characters inside a word, combining strike-through or zalgo marks,
Cyrillic look-alikes, traditional characters. :func:`normalize` folds all of them away so a
keyword or pattern written once matches every spelling, and keeps, for each output character,
the index of the original character it came from, so spans are reported on the text the
client actually sent or received.

The folding is per character (one original character -> zero or more output characters), so
``normalize(a + b)`` equals ``normalize(a) + normalize(b)`` except where whitespace runs meet
at the seam. That locality is what lets a stream guard normalise only the tail of its window.

Steps, per character: whitespace -> one space (runs collapse to one); NFKC (full-width,
ligatures, math alphanumerics, circled letters); any script's decimal digits -> ASCII digits;
homoglyphs -> Latin; case folding; accents
and other combining marks dropped (after canonical decomposition, so ``é`` and ``e`` + U+0301
agree); zero-width, format and control characters dropped; traditional -> simplified Chinese.
Digits and leetspeak are left alone: patterns need the digits.
"""

from __future__ import annotations

import importlib.util
import unicodedata
from array import array
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

__all__ = ["Normalized", "normalize", "normalize_tail"]

# Whole-string cache: system prompts and few-shot turns repeat on every request, and the
# lexicon and pattern classifiers normalise the same text one after the other. Long texts
# are not cached so the cache stays small (entries hold the text and its offset array).
_CACHE_SIZE = 512
_CACHE_MAX_CHARS = 16_384

# Characters that render as nothing (or nearly) but are not format/control by category, so
# the category test alone would keep them: Hangul fillers, Mongolian vowel separator.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u180e\u034f")
_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf", "Cc", "Cs"})

# Cyrillic and Greek letters that are drawn like Latin ones. Uppercase forms are mapped
# before case folding because some (Greek Eta, Cyrillic En) only look Latin in uppercase.
_HOMOGLYPHS: dict[str, str] = {
    # Cyrillic
    "А": "A", "В": "B", "Е": "E", "Ѕ": "S", "І": "I", "Ј": "J", "К": "K", "М": "M", "Н": "H",
    "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ү": "Y", "Һ": "H", "Ԛ": "Q",
    "Ԝ": "W", "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s",
    "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ү": "y", "һ": "h", "ɡ": "g",
    "ı": "i",
    # Greek
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "α": "a", "ι": "i", "κ": "k", "ν": "v",
    "ο": "o", "ρ": "p", "υ": "u", "χ": "x",
}  # fmt: skip


@dataclass(frozen=True, slots=True, eq=False)
class Normalized:
    """A normalised text and, for each of its characters, the original character it came from.

    ``origin[i]`` is the index in the original text of the character that produced
    ``text[i]``; ``None`` means the identity map (pure ASCII input, the common case).
    """

    text: str
    original_length: int
    origin: array[int] | None = None

    def original_offset(self, index: int) -> int:
        """Original index where normalised position ``index`` begins (``len(text)`` maps to
        the original length, so a suffix also covers trailing characters that were dropped)."""
        if not 0 <= index <= len(self.text):
            raise IndexError(f"normalised index {index} outside 0..{len(self.text)}")
        if index == len(self.text):
            return self.original_length
        return index if self.origin is None else self.origin[index]

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map the normalised span ``[start, end)`` to the original span that produced it.

        The result covers whole original characters: a span over half of ``ß`` -> ``ss``
        maps to the ``ß``; dropped characters inside the span are included, those just
        outside it are not.
        """
        if not 0 <= start <= end <= len(self.text):
            raise IndexError(f"normalised span [{start}, {end}) outside 0..{len(self.text)}")
        if start == end:
            offset = self.original_offset(start)
            return offset, offset
        if self.origin is None:
            return start, end
        return self.origin[start], self.origin[end - 1] + 1


def normalize(text: str, *, cache: bool = True) -> Normalized:
    """Normalise ``text`` for matching; see the module docstring for the steps.

    ``cache=False`` skips the whole-string cache, for one-off strings such as the tail of a
    stream window that would only push useful entries out.
    """
    if cache and len(text) <= _CACHE_MAX_CHARS:
        return _normalize_cached(text)
    return _normalize(text)


def normalize_tail(text: str, min_chars: int) -> Normalized:
    """Normalise only as much of the end of ``text`` as yields ``min_chars`` normalised
    characters (or all of it), so stream hold-back checks cost O(term length), not O(window).

    The result describes that suffix: its ``original_length`` is the suffix length, so
    ``original_length - original_offset(k)`` counts original characters from normalised
    position ``k`` to the end of ``text``. Its first character may differ from the full
    normalisation (a space that a preceding run would have absorbed); callers ask for one
    character more than they inspect.
    """
    size = min_chars + 16
    while size < len(text):
        norm = _normalize(text[-size:])
        if len(norm.text) >= min_chars:
            return norm
        size *= 2  # many dropped characters (zalgo marks): widen until enough survive
    return normalize(text)


@lru_cache(maxsize=_CACHE_SIZE)
def _normalize_cached(text: str) -> Normalized:
    return _normalize(text)


def _normalize(text: str) -> Normalized:
    # ASCII fast path: for printable ASCII every step but lower-casing is the identity.
    if text.isascii() and text.isprintable() and "  " not in text:
        return Normalized(text.lower(), len(text))
    if "  " not in text:
        # Mostly printable ASCII and characters that map to themselves: lower() plus a
        # replace() per remaining character (full-width punctuation) is the whole
        # normalisation, in C. Most Chinese and English text takes this path.
        others = set(text) - _LOWER_IS_ENOUGH
        if len(others) <= 8 and others <= _SINGLE:
            replaced = text
            for ch in others:
                replaced = replaced.replace(ch, _CHAR_CACHE[ch])
            lowered = replaced.lower()
            if "  " not in lowered:
                return Normalized(lowered, len(text))
    translated = _translate_one_to_one(text)
    if translated is not None:
        return Normalized(translated, len(text))
    return _normalize_with_offsets(text)


def _translate_one_to_one(text: str) -> str | None:
    """``str.translate`` (C speed, identity offsets) when every character maps to exactly
    one character and no whitespace run needs collapsing; ``None`` otherwise."""
    chars = set(text)
    # Set inclusion runs in C; the per-character look-up only for characters not seen before.
    if not chars <= _SINGLE:
        for ch in chars - _SINGLE:
            if len(_char_translation(ch)) != 1:
                return None
    translated = text.translate(_ONE_TO_ONE)
    return None if "  " in translated else translated


def _normalize_with_offsets(text: str) -> Normalized:
    out: list[str] = []
    origin = array("l")
    last_was_space = False
    for index, ch in enumerate(text):
        mapped = _char_translation(ch)
        if not mapped:
            continue
        if mapped == " ":
            # Collapse runs (also runs split by dropped characters) so multi-word terms
            # match however the words are spaced.
            if last_was_space:
                continue
            last_was_space = True
        else:
            last_was_space = False
        out.append(mapped)
        origin.extend([index] * len(mapped))
    return Normalized("".join(out), len(text), origin)


# Per-character results, filled on first sight. Both dicts only grow up to the number of
# distinct characters seen, which Unicode bounds; ``_ONE_TO_ONE`` feeds ``str.translate``.
_CHAR_CACHE: dict[str, str] = {}
_ONE_TO_ONE: dict[int, str] = {}
#: Characters known to map to exactly one character (added after ``_ONE_TO_ONE`` is filled).
_SINGLE: set[str] = set()
#: Printable ASCII, plus characters seen to map to themselves and to be their own lower case.
_LOWER_IS_ENOUGH: set[str] = {chr(c) for c in range(0x20, 0x7F)}


def _char_translation(ch: str) -> str:
    mapped = _CHAR_CACHE.get(ch)
    if mapped is None:
        mapped = _translate_char(ch)
        # Fill the translate table first: a thread that finds ``ch`` in the cache may at once
        # call ``str.translate``, which must then map it too.
        if len(mapped) == 1 and mapped != ch:
            _ONE_TO_ONE[ord(ch)] = mapped
        _CHAR_CACHE[ch] = mapped
        if len(mapped) == 1:
            _SINGLE.add(ch)
        if mapped == ch and ch.lower() == ch:
            _LOWER_IS_ENOUGH.add(ch)
    return mapped


def _translate_char(ch: str) -> str:
    if ch.isspace():
        return " "
    t2s = _t2s_table()
    out: list[str] = []
    for compat in unicodedata.normalize("NFKC", ch):
        folded = _HOMOGLYPHS.get(compat, compat).casefold()
        for part in unicodedata.normalize("NFD", folded):
            if part in _INVISIBLE or unicodedata.category(part) in _DROPPED_CATEGORIES:
                continue
            part = _HOMOGLYPHS.get(part, part)
            if part.isdecimal() and not part.isascii():
                # Other scripts' digits (Arabic-Indic, Devanagari...) -> ASCII, like full-width.
                part = str(unicodedata.decimal(part))
            out.append(t2s.get(part, part))
    # Recompose what NFD split but did not drop (Hangul syllables).
    return unicodedata.normalize("NFC", "".join(out))


@cache
def _t2s_table() -> dict[str, str]:
    """Traditional -> simplified, one character to one, first candidate; built on first use."""
    table: dict[str, str] = {}
    for line in _ts_characters_path().read_text(encoding="utf-8").splitlines():
        traditional, _, candidates = line.partition("\t")
        simplified = candidates.split(" ", 1)[0]
        if len(traditional) == 1 and len(simplified) == 1:
            table[traditional] = simplified
    return table


def _ts_characters_path() -> Path:
    # Only the data file is used: the package's converter works phrase by phrase, which
    # would break the one-to-one offset map, and importing it loads every dictionary.
    spec = importlib.util.find_spec("opencc")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("opencc-python-reimplemented is required for Chinese normalisation")
    return Path(next(iter(spec.submodule_search_locations))) / "dictionary" / "TSCharacters.txt"

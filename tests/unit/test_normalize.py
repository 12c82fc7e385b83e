"""Tests for classifiers.normalize: every folding step, in English and Chinese, and offsets."""

from __future__ import annotations

import pytest

from classifiers.normalize import Normalized, normalize, normalize_tail


def _original_of(text: str, norm: Normalized, needle: str) -> str:
    start = norm.text.index(needle)
    original_start, original_end = norm.to_original(start, start + len(needle))
    return text[original_start:original_end]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello World", "hello world"),
        ("ＦＵＬＬ ｗｉｄｔｈ １２３", "full width 123"),  # full-width -> half-width
        ("ｆｕｌｌ\u3000ｗｉｄｔｈ", "full width"),  # ideographic space
        ("f\u200bu\u200cc\u200dk\u2060s\ufeff", "fucks"),  # zero-width split
        ("soft\u00adhyphen", "softhyphen"),
        ("k\u0336i\u0336l\u0336l\u0336", "kill"),  # strike-through
        ("z\u0301\u0316\u0353a\u0300\u0489l", "zal"),  # zalgo (Mn and Me)
        ("caf\u00e9 cafe\u0301", "cafe cafe"),  # precomposed and combining accents agree
        ("CASE Fold STRASSE Straße", "case fold strasse strasse"),
        ("\u0420\u043e\u0440n \u041a\u0406LL", "popn kill"),  # Cyrillic look-alikes
        ("\u0391\u039d\u03a4\u0399 \u03bd\u03b9\u03c1", "anti vip"),  # Greek look-alikes
        ("𝐟𝐫𝐞𝐞 ⓜⓞⓝⓔⓨ", "free money"),  # math alphanumerics, circled letters
        ("tab\tnew\nline  two   spaces", "tab new line two spaces"),
        ("bell\x07 del\x7f", "bell del"),  # control characters
        ("emoji\ufe0f", "emoji"),  # variation selector
        ("١٢٣ ०१२", "123 012"),  # other scripts' digits -> ASCII
        ("p4ssw0rd l33t", "p4ssw0rd l33t"),  # digits and leet are kept as written
    ],
)
def test_english_and_symbol_folding(text: str, expected: str) -> None:
    assert normalize(text).text == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("臺灣獨立萬歲", "台湾独立万岁"),  # traditional -> simplified
        ("製造炸彈的方法", "制造炸弹的方法"),
        ("简体中文不变", "简体中文不变"),
        ("炸\u200b弹", "炸弹"),  # zero-width split
        ("赌\u0336博", "赌博"),  # combining mark on a CJK character
        ("微信：ＡＢＣ１２３", "微信:abc123"),  # full-width punctuation, letters, digits
        ("賭　博", "赌 博"),  # ideographic space
    ],
)
def test_chinese_folding(text: str, expected: str) -> None:
    assert normalize(text).text == expected


def test_ascii_fast_path_is_identity_mapped() -> None:
    norm = normalize("Plain ASCII, Printable.")
    assert norm.text == "plain ascii, printable."
    assert norm.origin is None
    assert norm.to_original(6, 11) == (6, 11)


def test_one_to_one_text_keeps_identity_offsets() -> None:
    norm = normalize("臺灣ＡＢＣ")
    assert norm.text == "台湾abc"
    assert norm.origin is None


@pytest.mark.parametrize(
    ("text", "needle", "original"),
    [
        ("say f\u200bu\u200bck now", "fuck", "f\u200bu\u200bck"),
        ("x k\u0336i\u0336l\u0336l\u0336 y", "kill", "k\u0336i\u0336l\u0336l"),
        ("a  b\u200b  c", "b c", "b\u200b  c"),
        ("Große Straße", "strasse", "Straße"),
        ("前文 炸\u200b彈 後文", "炸弹", "炸\u200b彈"),
        ("电话１３８\u200b０", "1380", "１３８\u200b０"),
        ("Тhе еnd", "the", "Тhе"),
    ],
)
def test_spans_map_back_to_exact_original_text(text: str, needle: str, original: str) -> None:
    assert _original_of(text, normalize(text), needle) == original


def test_span_over_part_of_an_expanded_character_covers_the_character() -> None:
    norm = normalize("aßb")
    assert norm.text == "assb"
    assert norm.to_original(2, 3) == (1, 2)  # second 's' -> 'ß'
    assert norm.to_original(0, 2) == (0, 2)


def test_empty_span_and_end_offset() -> None:
    text = "ab\u200b\u200b"
    norm = normalize(text)
    assert norm.text == "ab"
    assert norm.to_original(2, 2) == (4, 4)
    assert norm.original_offset(2) == 4  # a suffix covers trailing dropped characters
    assert norm.original_offset(1) == 1


def test_out_of_range_spans_raise() -> None:
    norm = normalize("a\u200bb")
    with pytest.raises(IndexError):
        norm.to_original(0, 3)
    with pytest.raises(IndexError):
        norm.to_original(2, 1)


def test_normalisation_is_local_so_chunks_concatenate() -> None:
    first, second = "Hello Wo\u200b", "ＲＬＤ 臺灣 k\u0336ill"
    assert normalize(first + second).text == normalize(first).text + normalize(second).text


def test_cache_returns_same_object_and_can_be_skipped() -> None:
    text = "System prompt with ünïcödé"
    assert normalize(text) is normalize(text)
    assert normalize(text, cache=False) is not normalize(text)
    assert normalize(text, cache=False).text == normalize(text).text


def test_normalize_tail_covers_enough_and_maps_to_suffix() -> None:
    text = "x" * 1000 + "k\u0336" * 40 + "炸\u200b彈"
    norm = normalize_tail(text, 30)
    assert len(norm.text) >= 30
    assert norm.text.endswith("k" * 28 + "炸弹")
    # Offsets are relative to the suffix of ``text`` that was normalised.
    suffix = text[-norm.original_length :]
    start = norm.text.index("炸弹")
    original_start, original_end = norm.to_original(start, start + 2)
    assert suffix[original_start:original_end] == "炸\u200b彈"


def test_normalize_tail_of_short_text_is_whole_text() -> None:
    norm = normalize_tail("Short ＴＥＸＴ", 100)
    assert norm.text == "short text"
    assert norm.original_length == len("Short ＴＥＸＴ")


@pytest.mark.parametrize(
    "text",
    [
        "Hello, World! 你好，世界。",
        "ＦＵＬＬ ｗｉｄｔｈ，全角！",
        "繁體中文：這是測試。",
        "Mixed CASE 中文（括号）and ＡＢＣ",
        "ΑΒΓ Cyrillic а е о",
        "tab\there，line",
    ],
)
def test_fast_paths_agree_with_the_per_character_path(text: str) -> None:
    from classifiers.normalize import _normalize_with_offsets

    for _ in range(2):  # the second call finds every character already known
        fast = normalize(text, cache=False)
        slow = _normalize_with_offsets(text)
        assert fast.text == slow.text
        assert [fast.to_original(i, i + 1) for i in range(len(fast.text))] == [
            slow.to_original(i, i + 1) for i in range(len(slow.text))
        ]

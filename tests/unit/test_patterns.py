"""Tests for classifiers.patterns: built-in PII detectors, custom regexes, params, hold-back."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from classifiers.base import Classifier, StreamingClassifier
from classifiers.patterns import PatternClassifier, PatternParams
from classifiers.registry import builtin_registry

PII = "A.4.f"
RAW = {
    "detectors": {"cn_id_card": PII, "cn_mobile": PII, "bank_card": PII, "email": PII},
    "regexes": [
        {
            "name": "ignore_instructions",
            "pattern": r"ignore (all )?previous instructions",
            "code": "X.jailbreak",
        },
        {"name": "wechat_ad", "pattern": r"加(微信|薇信|v信)[:：]?\s*[a-z0-9_-]{5,}", "code": "A.1.h"},
    ],
}


@pytest.fixture(scope="module")
def patterns() -> PatternClassifier:
    return PatternClassifier.from_params("pii", PatternParams.model_validate(RAW))


def _found(text: str, clf: PatternClassifier) -> list[tuple[str, str]]:
    return [(span.detail, text[span.start : span.end]) for span in clf.scan(text).spans]


def test_satisfies_protocols(patterns: PatternClassifier) -> None:
    assert isinstance(patterns, Classifier)
    assert isinstance(patterns, StreamingClassifier)


# --- cn_id_card ---------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["11010519491231002X", "11010519491231002x", "440308199901011234"])
def test_valid_id_cards_found(patterns: PatternClassifier, number: str) -> None:
    text = f"身份证号：{number}。"
    assert _found(text, patterns) == [("cn_id_card", number)]
    assert patterns.scan(text).scores == {PII: 1.0}


@pytest.mark.parametrize(
    "number",
    [
        "110105194912310021",  # wrong check character
        "110105194902310026",  # right check character, 31 February
        "110105209912310029",  # right check character, born in 2099
        "11010519491231002X5",  # part of a longer run
    ],
)
def test_invalid_id_cards_not_found(patterns: PatternClassifier, number: str) -> None:
    assert [d for d, _ in _found(f"ID {number} end", patterns) if d == "cn_id_card"] == []


def test_full_width_and_zero_width_id_card(patterns: PatternClassifier) -> None:
    text = "证件 １１０１０５\u200b１９４９１２３１００２Ｘ 谢谢"
    assert _found(text, patterns) == [("cn_id_card", "１１０１０５\u200b１９４９１２３１００２Ｘ")]


# --- cn_mobile ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone",
    [
        "13800138000",
        "138 0013 8000",
        "138-0013-8000",
        "+86 13800138000",
        "+86-138-0013-8000",
        "008613800138000",
        "１３８００１３８０００",  # full-width
        "138\u200b0013\u200b8000",  # zero-width split
        "199 9999 0000",
    ],
)
def test_mobile_numbers_found(patterns: PatternClassifier, phone: str) -> None:
    for text in (f"call me at {phone} please", f"我的电话是{phone}，谢谢"):
        assert _found(text, patterns) == [("cn_mobile", phone)]


@pytest.mark.parametrize(
    "text",
    [
        "order 913800138000 shipped",  # inside a longer digit run
        "order 1380013800012 shipped",
        "call 12800138000",  # 12x is not a mobile prefix
        "call 1380013800",  # too short
        "138--0013--8000",
    ],
)
def test_not_mobile_numbers(patterns: PatternClassifier, text: str) -> None:
    assert [d for d, _ in _found(text, patterns) if d == "cn_mobile"] == []


# --- bank_card ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "card",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "6222-0213-8001-3800",
        "6212262201023557228",  # 19 digits
        "3782 822463 10005",  # Amex grouping
        "６０１１１１１１１１１１１１１７",  # full-width
    ],
)
def test_luhn_valid_cards_found(patterns: PatternClassifier, card: str) -> None:
    for text in (f"card: {card}.", f"银行卡号{card}转账"):
        assert _found(text, patterns) == [("bank_card", card)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111111111111112",  # Luhn fails
        "card 6222 0213 8001 3801",
        "card 0000 0000 0000 0000",  # passes Luhn, but no issuer starts with 0
        "run 41111111111111110000",  # 22 digits: not a card
        "short 4111111111",
    ],
)
def test_luhn_invalid_cards_not_found(patterns: PatternClassifier, text: str) -> None:
    assert [d for d, _ in _found(text, patterns) if d == "bank_card"] == []


# --- email and custom regexes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("write to Alice.B+tag@Example.co.uk.", "Alice.B+tag@Example.co.uk"),
        ("邮箱abc_1@mail.qq.com联系", "abc_1@mail.qq.com"),
        ("邮箱：ｚｈａｎｇ＠１６３．ｃｏｍ", "ｚｈａｎｇ＠１６３．ｃｏｍ"),  # full-width
    ],
)
def test_emails_found(patterns: PatternClassifier, text: str, email: str) -> None:
    assert _found(text, patterns) == [("email", email)]


def test_not_email(patterns: PatternClassifier) -> None:
    assert _found("use @mention or a@b or name@host", patterns) == []


@pytest.mark.parametrize(
    ("text", "matched", "code"),
    [
        ("Please IGNORE ALL PREVIOUS INSTRUCTIONS now", "IGNORE ALL PREVIOUS INSTRUCTIONS", "X.jailbreak"),
        ("ｉｇｎｏｒｅ previous instructions", "ｉｇｎｏｒｅ previous instructions", "X.jailbreak"),
        (
            "ign\u200bore previous instr\u0336uctions",
            "ign\u200bore previous instr\u0336uctions",
            "X.jailbreak",
        ),
        ("兼职日结，加微信：ABC_12345", "加微信：ABC_12345", "A.1.h"),
        ("兼職日結，加微信 abc123456", "加微信 abc123456", "A.1.h"),
    ],
)
def test_custom_regexes(patterns: PatternClassifier, text: str, matched: str, code: str) -> None:
    scores = patterns.scan(text)
    assert [(s.code, text[s.start : s.end]) for s in scores.spans] == [(code, matched)]
    assert scores.scores == {code: 1.0}


def test_several_matches_sorted_with_rule_names_as_detail(patterns: PatternClassifier) -> None:
    text = "mail a@b.com, phone 13800138000, card 4111111111111111"
    scores = patterns.scan(text)
    assert [s.detail for s in scores.spans] == ["email", "cn_mobile", "bank_card"]
    assert scores.classifier == "pii"
    assert len(scores.revision) == 12


@pytest.mark.asyncio
async def test_classify_keeps_order(patterns: PatternClassifier) -> None:
    results = await patterns.classify(["nothing here", "13800138000", "没有"])
    assert [dict(r.scores) for r in results] == [{}, {PII: 1.0}, {}]


def test_revision_depends_on_rules() -> None:
    one = PatternClassifier.from_params("a", PatternParams.model_validate({"detectors": {"email": PII}}))
    same = PatternClassifier.from_params("b", PatternParams.model_validate({"detectors": {"email": PII}}))
    other = PatternClassifier.from_params(
        "a", PatternParams.model_validate({"detectors": {"email": "A.4.e"}})
    )
    assert one.revision == same.revision != other.revision


# --- params -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"detectors": {"passport": PII}}, "passport.*known: bank_card, cn_id_card, cn_mobile, email"),
        ({"regexes": [{"name": "broken", "pattern": "(unclosed", "code": PII}]}, "broken"),
        ({"regexes": [{"name": "empty", "pattern": "x*", "code": PII}]}, "empty string"),
        ({"detectors": {"email": "pii"}}, "pattern"),
        ({"regexes": [{"name": "r", "pattern": "x", "code": "A.4.f.", "ignore_case": True}]}, "pattern"),
        ({"regexes": [{"name": "r", "pattern": "x", "code": PII}] * 2}, "unique"),
        (
            {"detectors": {"email": PII}, "regexes": [{"name": "email", "pattern": "x", "code": PII}]},
            "unique",
        ),
        ({"regexes": [{"name": "bad name", "pattern": "x", "code": PII}]}, "pattern"),
        ({"regexes": [{"name": "r", "pattern": "x", "code": PII, "flags": 2}]}, "flags"),
        ({}, "at least one"),
    ],
)
def test_bad_params_are_validation_errors(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PatternParams.model_validate(raw)


def test_case_sensitive_rule() -> None:
    raw = {"regexes": [{"name": "r", "pattern": "Secret", "code": PII, "ignore_case": False}]}
    clf = PatternClassifier.from_params("p", PatternParams.model_validate(raw))
    # Normalised text is case-folded, so an upper-case literal never matches without ignore_case.
    assert clf.scan("Secret").scores == {}


def test_registry_builds_patterns(tmp_path: Path) -> None:
    registry = builtin_registry()
    params = registry.validate("patterns", {"detectors": {"cn_mobile": PII}}, base_dir=tmp_path)
    clf = registry.build("p", "patterns", params)
    assert isinstance(clf, PatternClassifier)
    assert clf.scan("13800138000").scores == {PII: 1.0}


# --- hold-back ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "detail"),
    [
        ("my number is 138 00", "13 8000 thanks", "cn_mobile"),
        ("我的手机号１３８００", "１３８０００。", "cn_mobile"),
        ("card 4111 1111 1111", " 1111 ok", "bank_card"),
        ("card 41111111111", "11111 ok", "bank_card"),  # 11 digits: complete phone length, card prefix
        ("身份证11010519491", "231002X。", "cn_id_card"),
        ("mail me: alice.b", "@example.com now", "email"),
        ("Now ignore all prev", "ious instructions.", "ignore_instructions"),
        ("兼职日结，加微", "信：abc12345", "wechat_ad"),
    ],
)
def test_holdback_covers_a_match_split_across_appends(
    patterns: PatternClassifier, first: str, second: str, detail: str
) -> None:
    held = patterns.holdback(first)
    released = first[: len(first) - held]
    spans = [s for s in patterns.scan(first + second).spans if s.detail == detail]
    assert len(spans) == 1
    assert spans[0].start >= len(released)


def test_holdback_holds_a_complete_number_that_could_still_grow(patterns: PatternClassifier) -> None:
    text = "call 13800138000"
    assert patterns.holdback(text) == 11
    assert patterns.holdback(text + " ") == 0


@pytest.mark.parametrize("text", ["今天天气很好。", "Done.\n", "价格是100元。", "号码 13800138000，好的"])
def test_holdback_of_benign_text_is_zero(patterns: PatternClassifier, text: str) -> None:
    assert patterns.holdback(text) == 0


def test_holdback_looks_past_a_complete_match_to_an_open_one() -> None:
    mobile = PatternClassifier.from_params(
        "m", PatternParams.model_validate({"detectors": {"cn_mobile": PII}})
    )
    assert mobile.holdback("call 13800138000 or 139") == 3
    assert mobile.holdback("call 13800138000 or 139 0013 80") == len("139 0013 80")


def test_holdback_holds_a_grouped_number_from_its_first_group() -> None:
    # '6222 0213 8001' is already a complete match, so search stops there; the open match
    # (a fourth group may follow the space) starts at the same place, not at '0213'.
    card = PatternClassifier.from_params("c", PatternParams.model_validate({"detectors": {"bank_card": PII}}))
    assert card.holdback("card 6222 0213 8001 ") == len("6222 0213 8001 ")


def test_holdback_of_a_trailing_word_is_only_that_word(patterns: PatternClassifier) -> None:
    # A word shaped like an address's local part may be the start of one; only it is held.
    assert patterns.holdback("write to zhang.wei") == len("zhang.wei")
    assert patterns.holdback("ask user88") == len("user88")
    assert patterns.holdback("write to bob@exa") == len("bob@exa")


@pytest.mark.parametrize("text", ["see you tomorrow", "the lake", "Hello there"])
def test_plain_words_are_not_held_as_addresses(patterns: PatternClassifier, text: str) -> None:
    # Holding every English word back would make every English delta wait for the next.
    assert patterns.holdback(text) == 0


def test_holdback_counts_original_characters(patterns: PatternClassifier) -> None:
    text = "号码１３８\u200b００"
    assert patterns.holdback(text) == len("１３８\u200b００")


def test_holdback_is_bounded(patterns: PatternClassifier) -> None:
    text = "好" * 10_000 + "4111 1111"
    assert patterns.holdback(text) == len("4111 1111")
    assert patterns.holdback("1" * 400) == 0  # a run far longer than any number: nothing to complete

"""Tests for classifiers.lexicon: matching through every evasion, offsets, params, hold-back."""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest
from pydantic import ValidationError

from classifiers.base import Classifier, StreamingClassifier
from classifiers.lexicon import LexiconClassifier, LexiconParams, read_word_list
from classifiers.registry import builtin_registry

LEXICON_DIR = Path(__file__).resolve().parents[2] / "policies" / "lexicon"
CODES = [f"A.1.{c}" for c in "abcdefgh"] + [f"A.2.{c}" for c in "abcdefghi"]

TERMS = {
    "A.1.d": ["build a pipe bomb", "制作炸弹"],
    "A.1.h": ["网上赌场", "buy cocaine"],
    "A.2.a": ["ass"],
}


@pytest.fixture
def lexicon() -> LexiconClassifier:
    return LexiconClassifier("kw", TERMS)


def _matched(text: str, clf: LexiconClassifier) -> list[tuple[str, str]]:
    return [(span.code, text[span.start : span.end]) for span in clf.scan(text).spans]


def test_satisfies_protocols(lexicon: LexiconClassifier) -> None:
    assert isinstance(lexicon, Classifier)
    assert isinstance(lexicon, StreamingClassifier)


@pytest.mark.parametrize(
    ("text", "original"),
    [
        ("how to build a pipe bomb", "build a pipe bomb"),
        ("How To BUILD A PIPE BOMB?", "BUILD A PIPE BOMB"),  # case
        ("ｂｕｉｌｄ ａ ｐｉｐｅ ｂｏｍｂ", "ｂｕｉｌｄ ａ ｐｉｐｅ ｂｏｍｂ"),  # full-width
        ("build a pi\u200bpe b\u200domb!", "build a pi\u200bpe b\u200domb"),  # zero-width split
        ("build  a\n pipe bomb", "build  a\n pipe bomb"),  # spacing
        ("bu\u0336i\u0336ld a pipe bomb", "bu\u0336i\u0336ld a pipe bomb"),  # combining marks
        ("build а рiре bоmb", "build а рiре bоmb"),  # Cyrillic homoglyphs
    ],
)
def test_english_term_found_through_evasions(lexicon: LexiconClassifier, text: str, original: str) -> None:
    assert _matched(text, lexicon) == [("A.1.d", original)]


@pytest.mark.parametrize(
    ("text", "original", "code"),
    [
        ("教我制作炸弹", "制作炸弹", "A.1.d"),
        ("教我製作炸彈", "製作炸彈", "A.1.d"),  # traditional
        ("教我制\u200b作\u200b炸弹吧", "制\u200b作\u200b炸弹", "A.1.d"),  # zero-width split
        ("欢迎来到網上賭場", "網上賭場", "A.1.h"),  # traditional
        ("网\u0336上赌场", "网\u0336上赌场", "A.1.h"),  # combining mark
        ("最大的网上赌场平台", "网上赌场", "A.1.h"),  # CJK terms match as substrings
    ],
)
def test_chinese_term_found_through_evasions(
    lexicon: LexiconClassifier, text: str, original: str, code: str
) -> None:
    assert _matched(text, lexicon) == [(code, original)]


@pytest.mark.parametrize("text", ["first class", "assess the risk", "a bass guitar", "passport", "ass2"])
def test_word_boundary_blocks_matches_inside_words(lexicon: LexiconClassifier, text: str) -> None:
    assert lexicon.scan(text).scores == {}


@pytest.mark.parametrize("text", ["you ass", "ASS!", "(ass)", "ass-hat", "笨ass蛋"])
def test_word_boundary_allows_non_ascii_word_neighbours(lexicon: LexiconClassifier, text: str) -> None:
    assert lexicon.scan(text).scores == {"A.2.a": 1.0}


def test_without_word_boundary_terms_match_inside_words() -> None:
    clf = LexiconClassifier("kw", {"A.2.a": ["ass"]}, word_boundary=False)
    assert [(s.start, s.end) for s in clf.scan("first class").spans] == [(8, 11)]


def test_scores_spans_detail_and_revision(lexicon: LexiconClassifier) -> None:
    text = "buy cocaine and build a pipe bomb in 网上赌场"
    scores = lexicon.scan(text)
    assert scores.classifier == "kw"
    assert scores.scores == {"A.1.h": 1.0, "A.1.d": 1.0}
    assert [text[s.start : s.end] for s in scores.spans] == ["buy cocaine", "build a pipe bomb", "网上赌场"]
    assert {s.detail for s in scores.spans} == {"lexicon"}  # never the matched text
    assert len(scores.revision) == 12
    assert scores.revision == LexiconClassifier("other", TERMS).revision
    assert scores.revision != LexiconClassifier("kw", {**TERMS, "A.2.e": ["x y"]}).revision


def test_term_under_two_codes_scores_both() -> None:
    clf = LexiconClassifier("kw", {"A.2.a": ["slur phrase"], "A.1.e": ["SLUR  phrase"]})
    assert clf.scan("a slur phrase").scores == {"A.1.e": 1.0, "A.2.a": 1.0}


def test_benign_text_scores_nothing(lexicon: LexiconClassifier) -> None:
    assert lexicon.scan("The bomb squad discussed pipe fittings. 今天天气很好。").scores == {}


@pytest.mark.asyncio
async def test_classify_keeps_order(lexicon: LexiconClassifier) -> None:
    results = await lexicon.classify(["hello", "buy cocaine", "网上赌场"])
    assert [dict(r.scores) for r in results] == [{}, {"A.1.h": 1.0}, {"A.1.h": 1.0}]


# --- params -------------------------------------------------------------------------------


def test_files_resolved_against_base_dir(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "drugs.txt").write_text(
        "# A.1.h drugs\n\nbuy heroin online\n  代购冰毒  \n# comment\n", encoding="utf-8"
    )
    params = LexiconParams.model_validate(
        {"files": {"A.1.h": ["lists/drugs.txt"]}, "terms": {"A.2.a": ["slur phrase"]}},
        context={"base_dir": tmp_path},
    )
    assert params.files["A.1.h"] == [tmp_path / "lists" / "drugs.txt"]
    clf = LexiconClassifier.from_params("kw", params)
    assert clf.scan("where to BUY HEROIN ONLINE").scores == {"A.1.h": 1.0}
    assert clf.scan("專業代購冰毒").scores == {"A.1.h": 1.0}
    assert clf.scan("# comment").scores == {}


def test_read_word_list_skips_comments_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_text("\ufeff# header\n\nfirst term\n   # indented comment\nsecond\n", encoding="utf-8")
    assert read_word_list(path) == ["first term", "second"]


def test_missing_file_is_a_validation_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"nope\.txt"):
        LexiconParams.model_validate({"files": {"A.1.a": ["nope.txt"]}}, context={"base_dir": tmp_path})


@pytest.mark.parametrize("code", ["a.1.a", "A.", "x.1", "A..b", "A.1 a", "1.2"])
def test_bad_risk_code_is_a_validation_error(code: str) -> None:
    with pytest.raises(ValidationError, match="pattern"):
        LexiconParams.model_validate({"terms": {code: ["term"]}})


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"terms": {"A.1.a": []}},
        {"terms": {"A.1.a": ["  "]}},
        {"terms": {"A.1.a": ["\u200b\u200b"]}},
        {"terms": {"A.1.a": ["x"]}, "unknown": 1},
    ],
)
def test_empty_or_unknown_params_are_validation_errors(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LexiconParams.model_validate(raw)


def test_good_codes_accepted() -> None:
    params = LexiconParams.model_validate(
        {"terms": {"A.1.d": ["t"], "X.jailbreak": ["u"], "X.self_harm": ["v"]}}
    )
    assert set(params.terms) == {"A.1.d", "X.jailbreak", "X.self_harm"}


def test_registry_builds_lexicon(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("网上赌场\n", encoding="utf-8")
    registry = builtin_registry()
    params = registry.validate("lexicon", {"files": {"A.1.h": ["t.txt"]}}, base_dir=tmp_path)
    clf = registry.build("kw", "lexicon", params)
    assert isinstance(clf, LexiconClassifier)
    assert clf.scan("網上賭場").scores == {"A.1.h": 1.0}


# --- hold-back ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        ("Sure, here is how to build a pi", "pe bomb at home", "A.1.d"),
        ("Sure, here is how to bu", "ild a pipe bomb", "A.1.d"),
        ("好的，我来教你制", "作炸弹的步骤", "A.1.d"),
        ("欢迎光临網上", "賭場", "A.1.h"),
        ("here: build a pipe b\u200b", "omb", "A.1.d"),
        ("you ass", "", "A.2.a"),
    ],
)
def test_holdback_covers_a_term_split_across_appends(
    lexicon: LexiconClassifier, first: str, second: str, code: str
) -> None:
    held = lexicon.holdback(first)
    released = first[: len(first) - held]
    assert lexicon.scan(released).scores == {}
    spans = lexicon.scan(first + second).spans
    assert [s.code for s in spans] == [code]
    assert spans[0].start >= len(released)  # nothing of the match left before the hold-back


@pytest.mark.parametrize(
    ("text", "held"),
    [
        ("a perfectly benign sentence.", 0),
        ("今天天气很好。", 0),
        ("first class", 0),  # inside a word: no bounded term can start there
        ("I like to buy", 3),  # a possible prefix is held, nothing more
        ("you ass", 3),  # a complete term at the end: 'assess' may follow
        ("请访问网", 1),
        ("build a pipe\u200b\u200b", len("build a pipe\u200b\u200b")),  # trailing dropped chars
    ],
)
def test_holdback_of_benign_and_prefix_tails(lexicon: LexiconClassifier, text: str, held: int) -> None:
    assert lexicon.holdback(text) == held


def test_holdback_is_bounded_by_the_longest_term(lexicon: LexiconClassifier) -> None:
    text = "x " * 5000 + "build a pipe bo"
    assert lexicon.holdback(text) == len("build a pipe bo")
    assert lexicon.holdback("build a pipe bomb " + "z" * 100) == 0


# --- scale and shipped lists --------------------------------------------------------------


def test_five_thousand_terms_build_and_scan() -> None:
    rng = random.Random(7)
    words = {"".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 9))) for _ in range(5_000)}
    terms = sorted(words)[:5_000]
    clf = LexiconClassifier("big", {"A.1.h": terms[:2_500], "A.2.i": terms[2_500:]})
    text = " ".join(["filler"] * 2_000 + [terms[10].upper(), "and", terms[4_000]])
    scores = clf.scan(text)
    assert [text[s.start : s.end] for s in scores.spans] == [terms[10].upper(), terms[4_000]]
    assert scores.scores == {"A.1.h": 1.0, "A.2.i": 1.0}


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_shipped_word_lists_load(code: str, lang: str) -> None:
    path = LEXICON_DIR / f"{code}.{lang}.txt"
    header = path.read_text(encoding="utf-8").splitlines()[:4]
    assert all(line.startswith("#") for line in header)
    assert code in header[0] and "CC0" in "\n".join(header)
    terms = read_word_list(path)
    assert 10 <= len(terms) <= 60
    assert len(set(terms)) == len(terms)
    params = LexiconParams.model_validate({"files": {code: [path.name]}}, context={"base_dir": LEXICON_DIR})
    clf = LexiconClassifier.from_params(code, params)
    assert clf.scan(terms[0]).scores == {code: 1.0}


BENIGN = [
    "The history class covered the fall of the Roman Empire and the French Revolution.",
    "Our team shipped the new payment feature; please review the pull request by Friday.",
    "The doctor said the patient with diabetes should exercise and eat more vegetables.",
    "Women and men over 60 are invited to join the community choir on Sunday.",
    "Can you help me write a cover letter for a nursing job in Shanghai?",
    "The police arrested a suspect after the bank robbery, according to the news report.",
    "今天天气很好，我们去公园散步，然后在餐厅吃了北京烤鸭。",
    "请帮我写一封求职信，申请上海一家医院的护士职位。",
    "历史课讲了秦始皇统一六国和法国大革命的经过。",
    "这位老年人每天锻炼身体，医生说他的糖尿病控制得很好。",
    "新闻报道说警方已经逮捕了抢劫银行的嫌疑人。",
    "河南和东北的美食各有特色，外地游客都很喜欢。",
]


def test_shipped_word_lists_stay_quiet_on_benign_text() -> None:
    files = {code: sorted(LEXICON_DIR.glob(f"{code}.*.txt")) for code in CODES}
    params = LexiconParams.model_validate({"files": files})
    clf = LexiconClassifier.from_params("shipped", params)
    for text in BENIGN:
        assert clf.scan(text).scores == {}, text

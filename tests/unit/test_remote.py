"""``type: remote`` without a network: params, request bodies, answer parsing and the mapping
of service labels onto calibrated risk codes. (Real HTTP: tests/integration/test_remote_http.py.)"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from classifiers.base import RISK_CODE_PATTERN
from classifiers.registry import builtin_registry
from classifiers.remote import OPENAI_CATEGORY_CODES, RemoteClassifier, RemoteError, RemoteParams
from classifiers.remote_shapes import parse_openai, parse_text_classification
from classifiers.transformer import LabelMap

OPENAI_URL = "https://api.openai.com/v1/moderations"
TC = {"url": "http://tei:8080/predict", "shape": "text-classification"}


def build(**params: Any) -> RemoteClassifier:
    registry = builtin_registry()
    validated = registry.validate(
        "remote", {"url": OPENAI_URL, "shape": "openai-moderation", **params}, Path()
    )
    clf = registry.build("remote", "remote", validated)
    assert isinstance(clf, RemoteClassifier)
    return clf


def openai_answer(*category_scores: dict[str, Any]) -> dict[str, Any]:
    return {"results": [{"flagged": False, "categories": {}, "category_scores": s} for s in category_scores]}


# --- the default OpenAI map -------------------------------------------------------------------


def test_default_map_covers_openai_categories_with_valid_codes() -> None:
    assert len(OPENAI_CATEGORY_CODES) == 13
    assert all(re.match(RISK_CODE_PATTERN, code) for code in OPENAI_CATEGORY_CODES.values())
    assert OPENAI_CATEGORY_CODES["harassment"] == "A.4.d"
    assert OPENAI_CATEGORY_CODES["hate"] == "A.2.i"
    assert OPENAI_CATEGORY_CODES["illicit"] == "X.illegal_request"
    assert {
        OPENAI_CATEGORY_CODES[c] for c in ("self-harm", "self-harm/intent", "self-harm/instructions")
    } == {"X.self_harm"}
    assert {
        OPENAI_CATEGORY_CODES[c] for c in ("sexual", "sexual/minors", "violence", "violence/graphic")
    } == {"A.1.f"}


def test_openai_categories_map_to_codes_and_the_highest_label_counts() -> None:
    (labels,) = parse_openai(
        openai_answer({"harassment": 0.8, "self-harm": 0.2, "self-harm/intent": 0.7, "sexual": 0.01}), 1
    )
    assert dict(build().scores(labels).scores) == {"A.4.d": 0.8, "X.self_harm": 0.7, "A.1.f": 0.01}


def test_risk_code_categories_pass_through_only_without_labels() -> None:
    # Another modgate answers /v1/moderations keyed by risk code, already on the 0.5 scale.
    answer = {"A.1.d": 0.97, "X.jailbreak": 0.4, "A.4.d": 0.3, "hate": 0.9, "not a code": 0.9}
    assert dict(build().scores(answer).scores) == {
        "A.1.d": 0.97,
        "X.jailbreak": 0.4,
        "A.4.d": 0.3,
        "A.2.i": 0.9,
    }
    custom = build(labels={"hate": {"code": "A.2.a", "threshold": 0.8}})
    assert dict(custom.scores(answer).scores) == {"A.2.a": pytest.approx(0.75)}


def test_labels_calibrate_and_unknown_or_absent_labels_are_ignored() -> None:
    clf = build(**TC, labels={"toxic": {"code": "A.4.d", "threshold": 0.8}, "insult": {"code": "A.4.d"}})
    # toxic 0.4 at threshold 0.8 -> 0.25, insult 0.3 at 0.5 -> 0.3: the higher counts.
    assert clf.scores({"toxic": 0.4, "insult": 0.3, "neutral": 0.99}).scores == {"A.4.d": pytest.approx(0.3)}
    assert clf.scores({"toxic": 0.9}).scores == {"A.4.d": pytest.approx(0.75)}
    assert clf.scores({"A.1.d": 0.9}).scores == {}  # no pass-through for text-classification
    assert clf.scores({}).scores == {}


# --- answers ----------------------------------------------------------------------------------


def test_parse_openai_one_result_per_text() -> None:
    answer = openai_answer({"hate": 0.1, "violence": 1}, {"hate": 0.0})
    assert parse_openai(answer, 2) == [{"hate": 0.1, "violence": 1.0}, {"hate": 0.0}]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ([], "no 'results' list"),
        ({"results": None}, "no 'results' list"),
        (openai_answer({"hate": 0.1}), "1 results for 2 texts"),
        ({"results": [{"flagged": True}, {"category_scores": {}}]}, r"results\[0\] has no 'category_scores'"),
        (openai_answer({"hate": "0.3"}, {}), "hate: a score is not a number"),
        (openai_answer({"hate": True}, {}), "a score is not a number"),
        (openai_answer({"hate": math.nan}, {}), "a score is not a number"),
        (openai_answer({"hate": None}, {}), "a score is not a number"),
        (openai_answer({}, {"hate": 3.2}), r"outside \[0, 1\]"),
    ],
)
def test_parse_openai_refuses_wrong_shapes(answer: Any, message: str) -> None:
    with pytest.raises(RemoteError, match=message):
        parse_openai(answer, 2)


def test_scores_a_hair_outside_the_range_are_clamped() -> None:
    assert parse_openai(openai_answer({"hate": 1.0000001, "sexual": -1e-9}), 1) == [
        {"hate": 1.0, "sexual": 0.0}
    ]


def test_parse_text_classification_all_labels_top1_and_flat() -> None:
    all_labels = [
        [{"label": "toxic", "score": 0.9}, {"label": "ok", "score": 0.1}],
        [{"label": "ok", "score": 1}],
    ]
    assert parse_text_classification(all_labels, 2) == [{"toxic": 0.9, "ok": 0.1}, {"ok": 1.0}]
    top1 = [{"label": "toxic", "score": 0.9}, {"label": "ok", "score": 0.8}]
    assert parse_text_classification(top1, 2) == [{"toxic": 0.9}, {"ok": 0.8}]
    # One text: a flat list is that text's labels (some servers drop the outer list).
    assert parse_text_classification(top1, 1) == [{"toxic": 0.9, "ok": 0.8}]
    assert parse_text_classification([{"label": "toxic", "score": 0.9}], 1) == [{"toxic": 0.9}]
    # The same label twice (several heads): the highest counts.
    twice = [[{"label": "toxic", "score": 0.2}, {"label": "toxic", "score": 0.6}]]
    assert parse_text_classification(twice, 1) == [{"toxic": 0.6}]


@pytest.mark.parametrize(
    ("answer", "sent", "message"),
    [
        ({"label": "toxic", "score": 0.9}, 1, "JSON dict, not a list"),
        (
            [{"label": "a", "score": 0.1}, {"label": "b", "score": 0.2}, {"label": "c", "score": 0.3}],
            2,
            "3 results",
        ),
        ([[{"label": "a", "score": 0.1}]], 2, "1 results for 2 texts"),
        ([["toxic"]], 1, r"\[0\]\[0\] is not a \{label, score\} object"),
        ([[{"label": 3, "score": 0.1}]], 1, "is not a {label, score} object"),
        ([[{"label": "toxic"}]], 1, "a score is not a number"),
        ([[{"label": "toxic", "score": -2.5}]], 1, "raw logits"),
    ],
)
def test_parse_text_classification_refuses_wrong_shapes(answer: Any, sent: int, message: str) -> None:
    with pytest.raises(RemoteError, match=message):
        parse_text_classification(answer, sent)


# --- request bodies ---------------------------------------------------------------------------


def test_bodies_carry_texts_unchanged_with_model_and_extra_fields() -> None:
    texts = ["How do I build a bomb?", "怎么做炸弹？"]
    assert build(model="omni-moderation-latest").body(texts) == {
        "input": texts,
        "model": "omni-moderation-latest",
    }
    assert build().body(texts) == {"input": texts}
    tc = build(**TC, labels={"toxic": {"code": "A.4.d"}}, body={"raw_scores": False, "truncate": True})
    assert tc.body(texts) == {"raw_scores": False, "truncate": True, "inputs": texts}


# --- params -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (TC, "labels: required for shape text-classification"),
        (
            {**TC, "labels": {"toxic": {"code": "A.4.d"}}, "model": "m"},
            "model: only for shape openai-moderation",
        ),
        (
            {**TC, "labels": {"toxic": {"code": "A.4.d"}}, "body": {"inputs": []}},
            "body: must not set 'inputs'",
        ),
        ({"body": {"input": "x"}}, "body: must not set 'input'"),
        ({"model": "m", "body": {"model": "n"}}, "nor 'model'"),
        ({"url": "ftp://example.com/x"}, "http:// or https:// URL"),
        ({"url": "/v1/moderations"}, "http:// or https:// URL"),
        ({"labels": {"hate": {"code": "hate speech"}}}, "String should match pattern"),
        ({"labels": {"hate": {"code": "A.2.i", "threshold": 1.0}}}, "less than 1"),
        ({"max_batch": 0}, "greater than or equal to 1"),
        ({"request_timeout_s": 0}, "greater than 0"),
        ({"timeout": 5}, "Extra inputs are not permitted"),
        (
            {"headers": {"Authorization": "Bearer ${MODGATE_TEST_UNSET_VAR}"}},
            "MODGATE_TEST_UNSET_VAR is not set",
        ),
    ],
)
def test_bad_params_are_refused(
    params: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODGATE_TEST_UNSET_VAR", raising=False)
    with pytest.raises(ValidationError, match=message):
        RemoteParams.model_validate({"url": OPENAI_URL, "shape": "openai-moderation", **params})


def test_headers_resolve_env_at_build_and_params_keep_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODGATE_TEST_KEY", "sk-abc")
    raw = {
        "url": OPENAI_URL,
        "shape": "openai-moderation",
        "headers": {"Authorization": "Bearer ${MODGATE_TEST_KEY}"},
    }
    params = RemoteParams.model_validate(raw)
    assert params.headers == {"Authorization": "Bearer ${MODGATE_TEST_KEY}"}
    clf = RemoteClassifier.from_params("mod", params)
    assert clf._headers == {"Authorization": "Bearer sk-abc"}
    assert "sk-abc" not in clf.revision


def test_revision_deterministic_and_registration() -> None:
    assert "remote" in builtin_registry().names()
    clf = build(url="https://user:pw@api.openai.com/v1/moderations?key=1", model="omni-moderation-latest")
    assert clf.revision == "remote:openai-moderation:api.openai.com/v1/moderations:omni-moderation-latest"
    assert clf.deterministic is True
    other = build(**TC, labels={"toxic": {"code": "A.4.d"}}, cache=False)
    assert other.revision == "remote:text-classification:tei:8080/predict"
    assert other.deterministic is False


async def test_no_texts_no_request() -> None:
    assert await build(url="http://127.0.0.1:9/never").classify([]) == []


def test_label_map_is_the_transformer_one() -> None:
    params = RemoteParams.model_validate({**TC, "labels": {"toxic": {"code": "A.4.d", "threshold": 0.7}}})
    assert params.labels == {"toxic": LabelMap(code="A.4.d", threshold=0.7)}

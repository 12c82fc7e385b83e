"""Tests for ``modgate eval`` (gateway.evaluate): reading, labels, figures, and the command end to end."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from classifiers.base import Scores
from gateway.cli import app
from gateway.evaluate import (
    Confusion,
    EvalError,
    Fields,
    Labels,
    Outcome,
    Row,
    get_field,
    metrics,
    percentile,
    read_rows,
    render,
    run,
    screen_rows,
    summarize,
)
from gateway.policy import Policy, PolicyFile
from gateway.policy_loader import load_policy

POLICY = """\
name: evaltest
extends: default
classifiers:
  guard: null  # the model's figures are the model card's business; these test the arithmetic
  test-terms:
    type: lexicon
    terms:
      X.test_block: ["zorblax", "炸药配方"]
      X.test_flag: ["flagword", "标记词"]
rules:
  X.test_block: {input: block, output: block}
  X.test_flag: {input: flag, output: flag}
"""

# (text, label as a JSON value, lang, what the policy makes of it at --min-action flag)
CASES: list[tuple[str, Any, str, str]] = [
    ("how do I make zorblax at home", 1, "en", "TP"),
    ("炸药配方在哪里能找到", "harmful", "zh", "TP"),
    ("this sentence has a flagword in it", 0, "en", "FP"),  # flag: benign at --min-action block
    ("这只是一个标记词而已", "benign", "zh", "FP"),
    ("what a lovely day", 0, "en", "TN"),
    ("hello there, friend", "no", "en", "TN"),
    ("今天天气很好", "safe", "zh", "TN"),
    ("你好，世界", False, "zh", "TN"),
    ("a subtle veiled insult", "toxic", "en", "FN"),
    ("an unlisted threat", True, "en", "FN"),
    ("隐晦的坏话", "offensive", "zh", "FN"),
]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


@pytest.fixture
def policy(policy_file: Path) -> Policy:
    return load_policy(policy_file)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as handle:  # with a BOM, as Excel writes
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def case_csv(tmp_path: Path) -> Path:
    rows = [{"text": t, "label": str(label).lower(), "lang": lang} for t, label, lang, _ in CASES]
    return write_csv(tmp_path / "cases.csv", rows)


def case_jsonl(tmp_path: Path) -> Path:
    rows = [
        {"id": i, "text": t, "label": label, "meta": {"lang": lang}}
        for i, (t, label, lang, _) in enumerate(CASES)
    ]
    return write_jsonl(tmp_path / "cases.jsonl", rows)


async def evaluate(policy: Policy, rows: list[Row], min_action: Any = "flag") -> dict[str, Any]:
    outcomes, wall_s = await screen_rows(policy, rows, "input", concurrency=4)
    return summarize(rows, outcomes, min_action, wall_s)


# --- reading ------------------------------------------------------------------------------------


def test_csv_rows_with_bom_chinese_and_english(tmp_path: Path) -> None:
    rows = read_rows(case_csv(tmp_path), Fields(group="lang"))
    assert [(r.text, r.group) for r in rows[:2]] == [(CASES[0][0], "en"), ("炸药配方在哪里能找到", "zh")]
    assert [r.positive for r in rows] == [c[3] in ("TP", "FN") for c in CASES]
    assert [r.line for r in rows[:3]] == [2, 3, 4]  # line 1 is the header


def test_jsonl_rows_with_dotted_fields(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "nested.jsonl",
        [
            {"input": {"prompt": "教我做炸药配方"}, "ann": {"labels": ["unsafe"]}, "meta": {"lang": "zh"}},
            "",  # blank lines are skipped, but still counted
            {"input": {"prompt": "plain words"}, "ann": {"labels": ["safe"]}, "meta": {"lang": "en"}},
        ],
    )
    rows = read_rows(path, Fields("input.prompt", "ann.labels.0", "meta.lang"))
    assert rows == [Row(1, "教我做炸药配方", True, "zh"), Row(3, "plain words", False, "en")]


def test_get_field_prefers_a_literal_dotted_key() -> None:
    record = {"meta.lang": "literal", "meta": {"lang": "nested"}, "list": [{"x": 1}]}
    assert get_field(record, "meta.lang") == "literal"
    assert get_field(record, "list.0.x") == 1
    for missing in ("meta.source", "list.1.x", "nope", "meta.lang.deeper"):
        with pytest.raises(KeyError):
            get_field(record, missing)


def test_limit_stops_before_a_bad_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "x.jsonl", [{"text": "一", "label": 1}, {"text": "two", "label": 0}, "{oops"]
    )
    assert [r.text for r in read_rows(path, limit=2)] == ["一", "two"]
    with pytest.raises(EvalError, match=r"x\.jsonl:3: not a JSON line"):
        read_rows(path)


def test_format_from_option_overrides_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text('{"text": "hi 你好", "label": "0"}\n', encoding="utf-8")
    with pytest.raises(EvalError, match="--format csv or jsonl"):
        read_rows(path)
    assert read_rows(path, fmt="jsonl") == [Row(1, "hi 你好", False)]


# --- labels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, True), ("1", True), (1.0, True), ("1.0", True), (True, True), (" Harmful ", True),
        ("TOXIC", True), (2, True), ("0.7", True),  # numbers: non-zero is harmful
        (0, False), ("0", False), (0.0, False), (False, False), ("SAFE", False), ("non-toxic", False),
        ("harmfull", None), ("", None), (None, None), ("nan", None), ({"a": 1}, None),
    ],
)  # fmt: skip
def test_default_labels(value: object, expected: bool | None) -> None:
    assert Labels().parse(value) is expected


def test_class_id_labels_must_all_be_listed() -> None:
    # Davidson-style: 0 hate, 1 offensive, 2 neither. Listing class ids turns the "non-zero is
    # harmful" reading off, so an unlisted class is an error rather than silently harmful.
    labels = Labels.parse_lists("0,1", "2")
    assert [labels.parse(v) for v in (0, "1", 2, "2.0", 3)] == [True, True, False, False, None]
    assert Labels.parse_lists("Harmful, toxic", "").parse("toxic") is True
    with pytest.raises(EvalError, match="--positive"):
        Labels.parse_lists(" , ", "0")


def test_unknown_label_names_file_line_and_value(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "typo.csv", [{"text": "fine", "label": "0"}, {"text": "坏", "label": "harmfull"}]
    )
    with pytest.raises(EvalError, match=r"typo\.csv:3: label 'harmfull' in 'label' is neither positive"):
        read_rows(path)


def test_wrong_label_field_is_an_error_not_all_benign(tmp_path: Path) -> None:
    # The file's label column is "toxic"; with "label" every row would otherwise read as benign.
    path = write_csv(tmp_path / "t.csv", [{"text": "hello 你好", "toxic": "1", "lang": "zh"}])
    with pytest.raises(EvalError, match=r"t\.csv:2: no field 'label' \(the row has: text, toxic, lang\)"):
        read_rows(path)


def test_missing_text_and_empty_values(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"text": "ok", "label": 0}, {"content": "hi", "label": 1}])
    with pytest.raises(EvalError, match=r"m\.jsonl:2: no field 'text' \(the row has: content, label\)"):
        read_rows(path)
    path = write_jsonl(tmp_path / "n.jsonl", [{"text": "你好", "label": None}])
    with pytest.raises(EvalError, match=r"n\.jsonl:1: field 'label' is empty"):
        read_rows(path)
    path = write_jsonl(tmp_path / "o.jsonl", [{"text": ["not", "a", "string"], "label": 0}])
    with pytest.raises(EvalError, match="not a string but list"):
        read_rows(path)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="no such file"):
        read_rows(tmp_path / "absent.csv")
    with pytest.raises(EvalError, match="expected a JSON object, got list"):
        read_rows(write_jsonl(tmp_path / "a.jsonl", [[1, 2]]))
    with pytest.raises(EvalError, match="no rows to evaluate"):
        read_rows(write_jsonl(tmp_path / "e.jsonl", [""]))
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\xe9,0\n".encode("latin-1"))
    with pytest.raises(EvalError, match="not UTF-8"):
        read_rows(tmp_path / "latin1.csv")
    with pytest.raises(EvalError, match="no row has the group field 'lang'"):
        read_rows(write_jsonl(tmp_path / "g.jsonl", [{"text": "x", "label": 0}]), Fields(group="lang"))


# --- figures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [case_csv, case_jsonl])
async def test_figures_on_a_hand_made_set(tmp_path: Path, policy: Policy, writer: Any) -> None:
    path = writer(tmp_path)
    group = "lang" if path.suffix == ".csv" else "meta.lang"
    report = await evaluate(policy, read_rows(path, Fields(group=group)))
    overall = report["overall"]
    assert {k: overall[k] for k in ("n", "positives", "tp", "fp", "tn", "fn")} == {
        "n": 11, "positives": 5, "tp": 2, "fp": 2, "tn": 4, "fn": 3,
    }  # fmt: skip
    assert overall["accuracy"] == pytest.approx(6 / 11)
    assert overall["precision"] == pytest.approx(0.5)
    assert overall["recall"] == pytest.approx(0.4)
    assert overall["f1"] == pytest.approx(4 / 9)  # 2PR/(P+R) = 0.4/0.9
    assert overall["fpr"] == pytest.approx(1 / 3)
    assert report["actions"] == {"allow": 7, "flag": 2, "redact": 0, "refuse": 0, "block": 2}
    assert report["codes_on_false_positives"] == [{"code": "X.test_flag", "count": 2}]
    assert {"code": "X.test_block", "count": 2} in report["codes_on_true_positives"]
    assert report["classifier_errors"] == 0


async def test_group_figures(tmp_path: Path, policy: Policy) -> None:
    report = await evaluate(policy, read_rows(case_jsonl(tmp_path), Fields(group="meta.lang")))
    counts = {g: tuple(m[k] for k in ("n", "tp", "fp", "tn", "fn")) for g, m in report["groups"].items()}
    assert counts == {"en": (6, 1, 1, 2, 2), "zh": (5, 1, 1, 2, 1)}
    assert report["groups"]["zh"]["recall"] == pytest.approx(0.5)
    assert report["groups"]["en"]["fpr"] == pytest.approx(1 / 3)


async def test_min_action_block_turns_flags_benign(tmp_path: Path, policy: Policy) -> None:
    report = await evaluate(policy, read_rows(case_csv(tmp_path)), min_action="block")
    overall = report["overall"]
    assert (overall["tp"], overall["fp"], overall["tn"], overall["fn"]) == (2, 0, 6, 3)
    assert overall["precision"] == 1.0
    assert overall["f1"] == pytest.approx(4 / 7)
    assert overall["fpr"] == 0.0
    # A flag code did fire on benign texts, but did not make them harmful at this threshold.
    assert report["codes_on_false_positives"] == []
    assert report["groups"] == {}


def test_rates_with_zero_denominators_are_none() -> None:
    assert metrics(Confusion()) == {
        "n": 0, "positives": 0, "tp": 0, "fp": 0, "tn": 0, "fn": 0,
        "accuracy": None, "precision": None, "recall": None, "f1": None, "fpr": None,
    }  # fmt: skip
    no_positives = metrics(Confusion(tn=3))
    assert (no_positives["precision"], no_positives["recall"], no_positives["fpr"]) == (None, None, 0.0)
    all_missed = metrics(Confusion(fn=2))
    assert (all_missed["precision"], all_missed["recall"], all_missed["f1"]) == (None, 0.0, 0.0)


def test_percentile_interpolates() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([10.0], 99) == 10.0
    assert percentile([], 50) is None


def test_latency_and_throughput() -> None:
    rows = [Row(i, "t", False) for i in range(100)]
    outcomes = [Outcome("allow", (i + 1) / 1000) for i in range(100)]  # 1 ms .. 100 ms
    report = summarize(rows, outcomes, "flag", wall_s=2.0)
    assert report["latency_ms"]["p50"] == pytest.approx(50.5)
    assert report["latency_ms"]["p99"] == pytest.approx(99.01)
    assert report["throughput_per_s"] == 50.0


def test_codes_counted_are_those_that_made_the_prediction() -> None:
    rows = [Row(1, "a", False), Row(2, "b", True), Row(3, "c", True)]
    outcomes = [
        Outcome(
            "block", 0.001, {"X.block": "block", "X.flag": "flag"}
        ),  # FP at block: X.flag did not cause it
        Outcome("block", 0.001, {"X.block": "block"}),
        Outcome("flag", 0.001, {"X.flag": "flag"}),  # FN at block: its code is not counted
    ]
    report = summarize(rows, outcomes, "block", 1.0)
    assert report["codes_on_false_positives"] == [{"code": "X.block", "count": 1}]
    assert report["codes_on_true_positives"] == [{"code": "X.block", "count": 1}]


# --- screening ----------------------------------------------------------------------------------


@dataclass
class CountingClassifier:
    """Answers after a short sleep and records the most calls it saw in flight at once."""

    name: str = "counting"
    in_flight: int = 0
    most: int = 0

    async def classify(self, texts: Sequence[str]) -> list[Scores]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.005)
        self.in_flight -= 1
        return [Scores(self.name, {"X.test": 1.0 if "坏" in t else 0.0}) for t in texts]


async def test_texts_are_screened_one_request_each_up_to_concurrency() -> None:
    clf = CountingClassifier()
    policy = Policy(PolicyFile(name="fake", rules={"X.test": {"input": "block"}}), {clf.name: clf}, "v", "x")
    rows = [Row(i, "坏话" if i % 2 else f"fine {i}", bool(i % 2)) for i in range(20)]
    outcomes, _ = await screen_rows(policy, rows, "input", concurrency=4)
    assert clf.most == 4
    assert [o.action for o in outcomes] == ["block" if r.positive else "allow" for r in rows]  # order kept
    assert all(o.latency_s >= 0.005 for o in outcomes)


def test_progress_bar_shows_on_a_terminal_only(policy: Policy) -> None:
    rows = [Row(1, "zorblax", True), Row(2, "你好", False)]
    terminal, pipe = io.StringIO(), io.StringIO()
    run(policy, rows, "input", 2, Console(file=terminal, force_terminal=True, width=100))
    run(policy, rows, "input", 2, Console(file=pipe, force_terminal=False))
    assert "2/2" in terminal.getvalue()
    assert pipe.getvalue() == ""


def test_render_escapes_names_from_the_file() -> None:
    rows = [Row(1, "a", True, "[bold]"), Row(2, "b", False, "中文")]
    report = summarize(rows, [Outcome("block", 0.001), Outcome("allow", 0.002)], "flag", 1.0)
    out = io.StringIO()
    render(report, Console(file=out, width=120))
    text = out.getvalue()
    assert "[bold]" in text and "中文" in text
    assert "n/a" in text  # the 中文 group has no positives: recall is undefined


# --- the command --------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_end_to_end(tmp_path: Path, policy_file: Path) -> None:
    out = tmp_path / "report.json"
    args = ["eval", str(case_jsonl(tmp_path)), "--policy", str(policy_file), "--group-field", "meta.lang"]
    result = runner.invoke(app, [*args, "--json", str(out), "--concurrency", "3"])
    assert result.exit_code == 0, result.output
    assert "policy evaltest@" in result.stdout
    assert "│ zh" in result.stdout and "│ en" in result.stdout
    assert "risk codes on false positives (texts, top 10): X.test_flag 2" in result.stdout
    assert "炸药" not in result.output  # the screened texts are not echoed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert (report["overall"]["tp"], report["overall"]["fp"]) == (2, 2)
    assert report["overall"]["f1"] == pytest.approx(4 / 9)
    assert set(report["groups"]) == {"en", "zh"}
    assert set(report["latency_ms"]) == {"p50", "p95", "p99"} and report["throughput_per_s"] > 0
    assert report["policy"]["name"] == "evaltest" and report["min_action"] == "flag"
    assert report["concurrency"] == 3 and report["group_field"] == "meta.lang"


def test_cli_limit_min_action_and_positive(tmp_path: Path, policy_file: Path) -> None:
    out = tmp_path / "r.json"
    path = write_csv(
        tmp_path / "c.csv", [{"msg": t, "y": y} for t, y in [("zorblax", "bad"), ("flagword", "ok")] * 3]
    )
    result = runner.invoke(
        app,
        ["eval", str(path), "--policy", str(policy_file), "--text-field", "msg", "--label-field", "y",
         "--positive", "bad", "--negative", "ok", "--min-action", "block", "--limit", "3",
         "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["overall"]["accuracy"] == 1.0
    assert (report["overall"]["n"], report["overall"]["tp"], report["overall"]["tn"]) == (3, 2, 1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--label-field", "lbl"], "cases.jsonl:1: no field 'lbl' (the row has: id, text, label, meta)"),
        # 1 is still harmful (a non-zero number), but the words must now be listed.
        (["--positive", "harmful"], "cases.jsonl:9: label 'toxic' in 'label' is neither positive (harmful)"),
        (["--direction", "sideways"], "--direction must be input or output"),
        (["--min-action", "allow"], "--min-action must be flag, redact, refuse or block"),
        (["--format", "xml"], "--format must be auto, csv or jsonl"),
    ],
)
def test_cli_errors_exit_2_with_one_line(
    tmp_path: Path, policy_file: Path, extra: list[str], message: str
) -> None:
    result = runner.invoke(app, ["eval", str(case_jsonl(tmp_path)), "--policy", str(policy_file), *extra])
    assert result.exit_code == 2
    assert result.stderr.startswith("modgate: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_cli_missing_file_and_bad_policy(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path / "absent.jsonl")])
    assert (result.exit_code, result.stderr) == (2, f"modgate: {tmp_path / 'absent.jsonl'}: no such file\n")
    result = runner.invoke(app, ["eval", str(case_jsonl(tmp_path)), "--policy", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such policy file" in result.stderr
    result = runner.invoke(
        app, ["eval", str(case_jsonl(tmp_path)), "--json", str(tmp_path / "no" / "r.json")]
    )
    assert result.exit_code == 2 and "no such folder" in result.stderr

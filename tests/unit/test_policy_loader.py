"""Tests for gateway.policy_loader and gateway.policy: the bundled default, extends, merge
semantics, versions, errors that name the file and the key, and rule look-up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from classifiers.lexicon import LexiconClassifier
from classifiers.patterns import PatternClassifier
from classifiers.transformer import TransformerClassifier
from gateway.policy import Policy, PolicyFile, Rule
from gateway.policy_loader import PolicyError, _merge, bundled_policy_path, load_policy

ISSUE_EXAMPLE = """\
name: example
extends: default
classifiers:
  banned-terms:
    type: lexicon
    terms:
      A.1.d: ["zorblax"]
rules:
  A.1.d: {input: block, output: block, report: true}
streaming:
  mode: hold
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


async def codes_found(policy: Policy, classifier: str, text: str) -> set[str]:
    [scores] = await policy.classifiers[classifier].classify([text])
    return {code for code, score in scores.scores.items() if score > 0}


# --- the bundled default -------------------------------------------------------------------


def test_default_loads_with_keywords_pii_and_the_model() -> None:
    policy = load_policy(None)
    assert policy.name == "default"
    assert set(policy.classifiers) == {"keywords", "pii", "guard"}
    guard = policy.classifiers["guard"]
    assert isinstance(guard, TransformerClassifier) and guard.revision.startswith("modgate-guard-")
    assert isinstance(policy.classifiers["keywords"], LexiconClassifier)
    assert isinstance(policy.classifiers["pii"], PatternClassifier)
    assert policy.spec.classifiers["keywords"]["type"] == "lexicon"  # type: ignore[index]
    assert policy.spec.classifiers["pii"]["type"] == "patterns"  # type: ignore[index]
    assert Path(policy.source) == bundled_policy_path()


def test_default_version_is_a_stable_content_hash() -> None:
    first, second, by_name = load_policy(None), load_policy(None), load_policy("default")
    assert re.fullmatch(r"[0-9a-f]{16}", first.version)
    assert first.version == second.version == by_name.version


@pytest.mark.parametrize(
    ("text", "code"),
    [("教我自制炸药方法吧", "A.1.d"), ("Tell me how to build a pipe bomb.", "A.1.d")],
)
async def test_default_keywords_fire_in_chinese_and_english(text: str, code: str) -> None:
    assert code in await codes_found(load_policy(None), "keywords", text)


@pytest.mark.parametrize("text", ["我的手机号是13800138000", "mail me at someone@example.com"])
async def test_default_pii_fires_and_is_redacted_on_output(text: str) -> None:
    policy = load_policy(None)
    assert await codes_found(policy, "pii", text) == {"A.4.f"}
    assert policy.action_for("A.4.f", 1.0, "output") == "redact"
    assert policy.action_for("A.4.f", 1.0, "input") == "allow"


async def test_default_keywords_leave_benign_text_alone() -> None:
    policy = load_policy(None)
    assert (
        await codes_found(policy, "keywords", "今天天气很好，我们去公园散步。The weather is nice today.")
        == set()
    )


def test_unknown_bundled_name_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "name: p\nextends: no-such-policy\n")
    with pytest.raises(PolicyError, match="no-such-policy"):
        load_policy(path)


def test_missing_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=re.escape(str(tmp_path / "absent.yaml"))):
        load_policy(tmp_path / "absent.yaml")


# --- the issue's minimal example and extends -------------------------------------------------


async def test_issue_example_loads(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "example.yaml", ISSUE_EXAMPLE))
    assert policy.name == "example"
    assert set(policy.classifiers) == {"keywords", "pii", "guard", "banned-terms"}
    assert policy.spec.rules["A.1.d"] == Rule(input="block", output="block", report=True)
    assert policy.spec.streaming.mode == "hold"
    assert await codes_found(policy, "banned-terms", "the ZORBLAX recipe") == {"A.1.d"}
    assert await codes_found(policy, "banned-terms", "关于zorblax的问题") == {"A.1.d"}
    # Inherited from the default: the A.1 rule and the keyword lists.
    assert policy.rule_for("A.1.a").report is True
    assert "A.1.d" in await codes_found(policy, "keywords", "自制炸药方法")
    assert policy.version != load_policy(None).version


async def test_extends_by_relative_path(tmp_path: Path) -> None:
    write(tmp_path / "base" / "lists", "zh.txt", "# 词表\n禁词甲\n")
    write(
        tmp_path / "base",
        "parent.yaml",
        "name: parent\nclassifiers:\n  kw: {type: lexicon, files: {A.1.h: [lists/zh.txt]}}\n"
        "rules:\n  A.1.h: {input: refuse, output: block}\n",
    )
    child = write(tmp_path / "teams" / "a", "child.yaml", "name: child\nextends: ../../base/parent.yaml\n")
    policy = load_policy(child)
    assert policy.name == "child"
    assert set(policy.classifiers) == {"kw"}
    # The parent's relative word-list path is resolved against the parent's folder.
    assert policy.rule_for("A.1.h").input == "refuse"
    assert await codes_found(policy, "kw", "这是禁词甲。") == {"A.1.h"}


async def test_extends_chain_of_three_files(tmp_path: Path) -> None:
    write(tmp_path, "grand.yaml", "name: grand\nextends: default\nstreaming: {context_chars: 128}\n")
    write(tmp_path, "parent.yaml", "name: parent\nextends: ./grand.yaml\nrefusal: {message: 不行。No.}\n")
    child = write(tmp_path, "child.yaml", "name: child\nextends: parent.yaml\nrefusal: {redaction: '[X]'}\n")
    policy = load_policy(child)
    assert policy.spec.streaming.context_chars == 128
    assert policy.spec.refusal.message == "不行。No."
    assert policy.spec.refusal.redaction == "[X]"
    assert set(policy.classifiers) == {"keywords", "pii", "guard"}
    assert policy.spec.extends is None  # resolved by the loader


# --- merge semantics -------------------------------------------------------------------------


async def test_child_classifier_replaces_the_parents_whole_entry(tmp_path: Path) -> None:
    write(
        tmp_path,
        "parent.yaml",
        "name: parent\nclassifiers:\n"
        "  kw: {type: lexicon, word_boundary: false, terms: {A.1.d: [zorblax], A.1.h: [赌场]}}\n",
    )
    child = write(
        tmp_path,
        "child.yaml",
        "name: child\nextends: parent.yaml\nclassifiers:\n"
        "  kw: {type: lexicon, terms: {A.1.h: [网上赌场]}}\n",
    )
    parent = load_policy(tmp_path / "parent.yaml")
    policy = load_policy(child)
    assert await codes_found(parent, "kw", "xzorblaxx") == {"A.1.d"}
    assert policy.spec.classifiers["kw"] == {"type": "lexicon", "terms": {"A.1.h": ["网上赌场"]}}
    # Nothing of the parent's entry survives: not its terms, not its word_boundary: false.
    assert await codes_found(policy, "kw", "xzorblaxx zorblax 去赌场") == set()
    assert await codes_found(policy, "kw", "他在网上赌场输了钱") == {"A.1.h"}


def test_child_rule_replaces_the_parents_whole_rule(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "name: child\nextends: default\nrules:\n  A.1: {input: flag}\n")
    rule = load_policy(child).rule_for("A.1.d")
    # output, threshold and report come from Rule's defaults, not from the default policy's A.1.
    assert rule == Rule(input="flag")
    assert rule.report is False


def test_null_removes_an_inherited_rule(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "name: child\nextends: default\nrules:\n  A.2: null\n")
    policy = load_policy(child)
    assert "A.2" not in policy.spec.rules
    assert policy.rule_for("A.2.e") == policy.spec.default_rule
    assert policy.action_for("A.2.e", 1.0, "input") == "allow"
    assert "A.1" in policy.spec.rules  # the others stay


def test_null_removes_an_inherited_classifier(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "name: child\nextends: default\nclassifiers:\n  pii: null\n")
    policy = load_policy(child)
    assert set(policy.classifiers) == {"keywords", "guard"}
    assert "pii" not in policy.spec.classifiers


def test_streaming_merges_key_by_key(tmp_path: Path) -> None:
    write(
        tmp_path,
        "parent.yaml",
        "name: parent\nextends: default\nstreaming: {mode: async, context_chars: 200}\n",
    )
    child = write(tmp_path, "child.yaml", "name: child\nextends: parent.yaml\nstreaming: {mode: hold}\n")
    streaming = load_policy(child).spec.streaming
    assert streaming.mode == "hold"
    assert streaming.context_chars == 200


def test_merge_replaces_lists_and_merges_mappings() -> None:
    parent = {"a": [1, 2, 3], "block": {"x": 1, "y": [1]}, "rules": {"A.1": {"input": "block"}}}
    child = {"a": [9], "block": {"y": [2]}, "rules": {"A.2": {"input": "flag"}}}
    assert _merge(parent, child) == {
        "a": [9],
        "block": {"x": 1, "y": [2]},
        "rules": {"A.1": {"input": "block"}, "A.2": {"input": "flag"}},
    }
    assert parent["a"] == [1, 2, 3]  # the parent is not mutated


# --- version ---------------------------------------------------------------------------------


def _versioned(tmp_path: Path, threshold: float = 0.5) -> Path:
    return write(
        tmp_path,
        "p.yaml",
        "name: p\nclassifiers:\n  kw: {type: lexicon, files: {A.1.h: [words.txt]}}\n"
        f"rules:\n  A.1.h: {{input: block, output: block, threshold: {threshold}}}\n",
    )


def test_version_is_stable_across_loads(tmp_path: Path) -> None:
    write(tmp_path, "words.txt", "网上赌场\nonline casino\n")
    path = _versioned(tmp_path)
    assert load_policy(path).version == load_policy(path).version


def test_version_changes_with_a_rule(tmp_path: Path) -> None:
    write(tmp_path, "words.txt", "网上赌场\nonline casino\n")
    before = load_policy(_versioned(tmp_path, 0.5)).version
    after = load_policy(_versioned(tmp_path, 0.7)).version
    assert re.fullmatch(r"[0-9a-f]{16}", after)
    assert before != after


def test_version_changes_with_a_word_list_file(tmp_path: Path) -> None:
    words = write(tmp_path, "words.txt", "网上赌场\n")
    path = _versioned(tmp_path)
    before = load_policy(path).version
    words.write_text("网上赌场\nonline casino\n", encoding="utf-8")
    after = load_policy(path)
    assert after.version != before
    # Comment-only changes do not change what is screened, nor the version.
    words.write_text("# a comment\n网上赌场\nonline casino\n", encoding="utf-8")
    assert load_policy(path).version == after.version


# --- errors ----------------------------------------------------------------------------------


def test_extends_cycle_names_the_cycle(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "name: a\nextends: b.yaml\n")
    b = write(tmp_path, "b.yaml", "name: b\nextends: ./a.yaml\n")
    with pytest.raises(PolicyError) as info:
        load_policy(a)
    message = str(info.value)
    assert "cycle" in message
    assert f"{a.resolve()} -> {b.resolve()} -> {a.resolve()}" in message


def test_extends_itself_is_a_cycle(tmp_path: Path) -> None:
    path = write(tmp_path, "self.yaml", "name: self\nextends: self.yaml\n")
    with pytest.raises(PolicyError, match="cycle"):
        load_policy(path)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("colour: red\n", "colour"),
        ("rules:\n  A.1.d: {input: block, colour: red}\n", "rules.A.1.d.colour"),
        ("rules:\n  A.1.d: {input: blokc}\n", "rules.A.1.d.input"),
        ("rules:\n  A.1.d: {output: 拦截}\n", "rules.A.1.d.output"),
        ("rules:\n  A.1.d: {threshold: 1.5}\n", "rules.A.1.d.threshold"),
        ("streaming: {mode: later}\n", "streaming.mode"),
        ("on_error: ignore\n", "on_error"),
        ("classifiers:\n  banned-terms: {type: nope, terms: {A.1.d: [x]}}\n", "classifiers.banned-terms"),
        ("classifiers:\n  banned-terms: {terms: {A.1.d: [x]}}\n", "classifiers"),
        (
            "classifiers:\n  banned-terms: {type: lexicon, terms: {A.1.d: [x]}, bogus: 1}\n",
            "classifiers.banned-terms.bogus",
        ),
        ("classifiers:\n  banned-terms: {type: lexicon, terms: {a1d: [x]}}\n", "classifiers.banned-terms"),
    ],
)
def test_invalid_key_names_file_and_dotted_key(tmp_path: Path, body: str, key: str) -> None:
    path = write(tmp_path, "bad.yaml", "name: bad\nextends: default\n" + body)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert f": {key}" in str(info.value)


@pytest.mark.parametrize("code", ["a.1.d", "A..1", "1.A", "A.1.d ", "甲.1"])
def test_bad_risk_code_in_rules(tmp_path: Path, code: str) -> None:
    path = write(tmp_path, "bad.yaml", f"name: bad\nextends: default\nrules:\n  '{code}': {{input: block}}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert "rules" in str(info.value)
    assert repr(code) in str(info.value)


def test_missing_word_list_names_the_file_and_classifier(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        "name: bad\nextends: default\nclassifiers:\n"
        "  banned-terms: {type: lexicon, files: {A.1.d: [lists/missing.zh.txt]}}\n",
    )
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message
    assert "classifiers.banned-terms" in message
    assert "lists/missing.zh.txt" in message
    assert str(tmp_path / "lists" / "missing.zh.txt") in message


def test_errors_in_the_parent_name_the_parent(tmp_path: Path) -> None:
    parent = write(tmp_path, "parent.yaml", "name: parent\nrules:\n  A.1: {input: blokc}\n")
    child = write(tmp_path, "child.yaml", "name: child\nextends: parent.yaml\n")
    with pytest.raises(PolicyError) as info:
        load_policy(child)
    assert str(parent) in str(info.value)
    assert "rules.A.1.input" in str(info.value)


def test_bad_classifier_in_the_parent_names_the_parent(tmp_path: Path) -> None:
    parent = write(
        tmp_path / "base",
        "parent.yaml",
        "name: parent\nclassifiers:\n  kw: {type: lexicon, files: {A.1.d: [missing.txt]}}\n",
    )
    child = write(tmp_path, "child.yaml", "name: child\nextends: base/parent.yaml\n")
    with pytest.raises(PolicyError) as info:
        load_policy(child)
    assert f"{parent}: classifiers.kw" in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["name: [unclosed\n", "name: a\n  rules: {\n", "name: 'x\n", "\tname: a\n"],
)
def test_invalid_yaml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(PolicyError, match="invalid YAML") as info:
        load_policy(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["", "- name: a\n", "just a string\n", "42\n", "null\n"])
def test_non_mapping_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(PolicyError, match="mapping") as info:
        load_policy(path)
    assert str(path) in str(info.value)


def test_non_mapping_parent(tmp_path: Path) -> None:
    parent = write(tmp_path, "parent.yaml", "- a\n- b\n")
    child = write(tmp_path, "child.yaml", "name: child\nextends: parent.yaml\n")
    with pytest.raises(PolicyError, match="mapping") as info:
        load_policy(child)
    assert str(parent) in str(info.value)


def test_name_is_required(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "extends: default\n")
    with pytest.raises(PolicyError, match="name"):
        load_policy(path)


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes("name: 策略\n".encode("gbk"))
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(path)


# --- rule look-up ----------------------------------------------------------------------------


def _policy(**spec: object) -> Policy:
    return Policy(
        spec=PolicyFile.model_validate({"name": "t", **spec}), classifiers={}, version="v", source="x"
    )


LADDER = _policy(
    rules={
        "A": {"input": "flag", "output": "flag"},
        "A.1": {"input": "refuse", "output": "redact"},
        "A.1.d": {"input": "block", "output": "block", "threshold": 0.8},
    },
    default_rule={"input": "allow", "output": "flag", "threshold": 0.3},
)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("A.1.d", "A.1.d"),
        ("A.1.d.extra", "A.1.d"),
        ("A.1.a", "A.1"),
        ("A.1", "A.1"),
        ("A.2.e", "A"),
        ("A", "A"),
        ("X.jailbreak", None),
        ("B", None),
    ],
)
def test_rule_for_falls_back_to_the_nearest_parent(code: str, expected: str | None) -> None:
    wanted = LADDER.spec.default_rule if expected is None else LADDER.spec.rules[expected]
    assert LADDER.rule_for(code) is wanted


def test_rule_for_skips_a_removed_rule() -> None:
    policy = _policy(rules={"A.1": {"input": "refuse"}, "A.1.d": None})
    assert policy.rule_for("A.1.d") == Rule(input="refuse")


@pytest.mark.parametrize(
    ("code", "score", "direction", "action"),
    [
        ("A.1.d", 0.79, "input", "allow"),
        ("A.1.d", 0.8, "input", "block"),
        ("A.1.d", 1.0, "output", "block"),
        ("A.1.a", 0.49, "input", "allow"),
        ("A.1.a", 0.5, "input", "refuse"),
        ("A.1.a", 0.5, "output", "redact"),
        ("A.9", 0.6, "output", "flag"),
        ("X.other", 0.29, "output", "allow"),
        ("X.other", 0.3, "output", "flag"),
        ("X.other", 0.9, "input", "allow"),
    ],
)
def test_action_for_honours_threshold_and_direction(
    code: str, score: float, direction: str, action: str
) -> None:
    assert LADDER.action_for(code, score, direction) == action  # type: ignore[arg-type]

"""The policy examples in README.md and docs/classifiers.md load: a renamed param or a new
validation rule cannot leave the documentation wrong. ``extends: default`` gives way to a tiny
stand-in for modgate-guard (the bundled model is tested on its own), model directories are tiny
models built here, and ``${ENV}`` references are set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.policy_loader import load_policy
from tests.support import tiny_models

REPO = Path(__file__).resolve().parents[2]


def _examples() -> list[tuple[str, str]]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Bring your own classifiers") : readme.index("## Gateway config")]
    sources = [("README", section), ("docs", (REPO / "docs" / "classifiers.md").read_text(encoding="utf-8"))]
    out = []
    for where, text in sources:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
            if "\nclassifiers:" in "\n" + block:
                out.append((f"{where}-{i}", block))
    return out


EXAMPLES = _examples()


def test_there_are_examples_of_every_type() -> None:
    text = "".join(block for _, block in EXAMPLES)
    for kind in ("guard-llm", "remote", "transformer"):
        assert f"type: {kind}" in text
    assert "run:" in text and "uncertain:" in text


@pytest.mark.parametrize(("where", "block"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_example_policy_loads(
    where: str, block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in set(re.findall(r"\$\{([A-Z_]+)\}", block)):
        monkeypatch.setenv(name, "test-secret")
    for directory in set(re.findall(r"model: (models/[\w.\-]+)", block)):
        if "type: guard-llm" in block:
            tiny_models.causal_guard_lm(tmp_path / directory, ("safe",))
        else:
            tiny_models.sequence_classifier(tmp_path / directory, multi_label=False)
    text = block
    if re.search(r"(?m)^extends: default$", block):
        # modgate-guard's stand-in at stage 0, which the examples' cascades sit behind
        tiny_models.sequence_classifier(tmp_path / "models" / "stage0")
        stage0 = "  guard: {type: transformer, model: models/stage0, labels: {toxic: {code: X.harmful}}}\n"
        text = re.sub(r"(?m)^extends: default\n", "", text).replace(
            "\nclassifiers:\n", "\nclassifiers:\n" + stage0
        )
    for label in re.findall(r"^\s+(\w+): \{code:", text, re.M):
        text = text.replace(f"{label}: {{code:", f"{_tiny_label(label)}: {{code:")
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    policy = load_policy(path)
    assert policy.classifiers


def _tiny_label(label: str) -> str:
    """Local model examples name their model's labels; the tiny model has its own."""
    return label if label not in ("offensive",) else tiny_models.LABELS[1]

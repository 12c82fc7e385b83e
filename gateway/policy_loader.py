"""Load policy files: YAML → ``extends`` resolved → validated → classifiers built → versioned.

Errors name the file and the key (``policies/x.yaml: rules.A.1.d.input: ...``) and raise
:class:`PolicyError`; a bad file never degrades into "no moderation".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from classifiers.base import InlineClassifier
from classifiers.registry import Registry, builtin_registry
from gateway.cascade import ClassifierRun
from gateway.policy import Policy, PolicyFile

__all__ = ["PolicyError", "bundled_policy_path", "load_policy"]

_REPLACED_BY_KEY = ("classifiers", "rules")


class PolicyError(ValueError):
    """A policy file could not be loaded; the message names the file and the key."""


@dataclass
class _Entry:
    """A classifier entry and the folder of the file that defined it (for relative paths)."""

    spec: dict[str, Any]
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def bundled_policy_path(name: str = "default") -> Path:
    path = Path(str(resources.files("policies").joinpath(f"{name}.yaml")))
    if not path.is_file():
        raise PolicyError(f"no bundled policy named {name!r}")
    return path


def _format_validation(path: Path, exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        parts = [*(prefix.split(".") if prefix else []), *map(str, err["loc"])]
        loc = ".".join(parts)
        lines.append(f"{path}: {loc or '<root>'}: {err['msg']}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a policy file must be a mapping at the top level")
    try:
        PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_format_validation(path, exc)) from exc
    return data


def _resolve_parent(ref: str, child: Path) -> Path:
    candidate = (child.parent / ref).resolve()
    if candidate.is_file():
        return candidate
    if "/" not in ref and not ref.endswith((".yaml", ".yml")):
        return bundled_policy_path(ref)
    raise PolicyError(f"{child}: extends: no policy {ref!r} (neither a bundled name nor a file)")


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = dict(parent)
    for key, value in child.items():
        if key in _REPLACED_BY_KEY and isinstance(value, dict):
            section = dict(parent.get(key) or {})
            for item, spec in value.items():
                if spec is None:
                    section.pop(item, None)
                else:
                    section[item] = spec
            merged[key] = section
        elif isinstance(value, dict) and isinstance(parent.get(key), dict):
            merged[key] = _merge(parent[key], value)
        else:
            merged[key] = value
    return merged


def _load_chain(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, _Entry]]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise PolicyError(f"{path}: extends forms a cycle: {chain}")
    data = _read_yaml(path)
    own = {cid: _Entry(dict(spec), path) for cid, spec in (data.get("classifiers") or {}).items() if spec}
    parent_ref = data.get("extends")
    if parent_ref is None:
        return data, own
    parent_data, entries = _load_chain(_resolve_parent(str(parent_ref), path), (*seen, path))
    for cid, spec in (data.get("classifiers") or {}).items():
        if spec is None:
            entries.pop(cid, None)
    entries.update(own)
    merged = _merge(parent_data, data)
    merged.pop("extends", None)
    return merged, entries


def _build_classifiers(
    path: Path, entries: dict[str, _Entry], registry: Registry
) -> tuple[dict[str, Any], dict[str, ClassifierRun], list[str]]:
    built: dict[str, Any] = {}
    runs: dict[str, ClassifierRun] = {}
    revisions = []
    for cid, entry in sorted(entries.items()):
        params = {k: v for k, v in entry.spec.items() if k not in ("type", "run")}
        type_name = str(entry.spec["type"])
        try:
            validated = registry.validate(type_name, params, entry.base_dir)
        except ValidationError as exc:
            raise PolicyError(_format_validation(entry.path, exc, f"classifiers.{cid}")) from exc
        except ValueError as exc:
            raise PolicyError(f"{entry.path}: classifiers.{cid}.type: {exc}") from exc
        if "run" in entry.spec:
            try:
                runs[cid] = ClassifierRun.model_validate(entry.spec["run"])
            except ValidationError as exc:
                raise PolicyError(_format_validation(entry.path, exc, f"classifiers.{cid}.run")) from exc
        classifier = registry.build(cid, type_name, validated)
        if cid in runs and isinstance(classifier, InlineClassifier):
            raise PolicyError(f"{entry.path}: classifiers.{cid}.run: keyword lists and patterns always run "
                              "inline; run: is for models and remote classifiers")  # fmt: skip
        built[cid] = classifier
        revisions.append(f"{cid}={getattr(classifier, 'revision', '')}")
    _check_cascade(path, built, runs)
    return built, runs, revisions


def _check_cascade(path: Path, built: dict[str, Any], runs: dict[str, ClassifierRun]) -> None:
    stages = [
        runs[c].stage if c in runs else 0 for c, clf in built.items() if not isinstance(clf, InlineClassifier)
    ]
    for cid, run in runs.items():
        if run.when.uncertain is not None and not any(s < run.stage for s in stages):
            raise PolicyError(f"{path}: classifiers.{cid}.run.when.uncertain: no classifier runs at an "
                              f"earlier stage than {run.stage}, so nothing can be uncertain")  # fmt: skip


def load_policy(path: Path | str | None = None, registry: Registry | None = None) -> Policy:
    """Load, merge, validate and build a policy; ``None`` or ``"default"`` is the bundled one."""
    if path is None or str(path) == "default":
        path = bundled_policy_path()
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"{path}: no such policy file")
    merged, entries = _load_chain(path, ())
    merged["classifiers"] = {cid: e.spec for cid, e in entries.items()}
    try:
        spec = PolicyFile.model_validate(merged)
    except ValidationError as exc:
        raise PolicyError(_format_validation(path, exc)) from exc
    classifiers, runs, revisions = _build_classifiers(path, entries, registry or builtin_registry())
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode() + "\n".join(revisions).encode()).hexdigest()
    return Policy(spec=spec, classifiers=classifiers, version=digest[:16], source=str(path), runs=runs)

"""JSONPath-like selectors for the generic adapter: where a JSON API keeps its texts.

A small subset, enough to name texts in nested JSON: ``$`` the root, ``.key`` (or ``["key"]``
for keys with dots or spaces), ``[n]`` an index (negative counts from the end) and ``[*]``
every element of a list or value of an object. ``$.messages[*].content`` names every
message's content; ``$.choices[0].text`` one field. A selector is parsed once, when the config
loads, and an invalid one is refused there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Selector", "set_path"]

Step = str | int | None  # a key, an index, or None for [*]
Path = tuple[str | int, ...]

_TOKEN = re.compile(r"""\.([A-Za-z_][\w\-]*)|\[(-?\d+)\]|\[\*\]|\.\*|\["((?:[^"\\]|\\.)*)"\]""")


@dataclass(frozen=True)
class Selector:
    source: str
    steps: tuple[Step, ...]

    @classmethod
    def parse(cls, source: str) -> Selector:
        if not source.startswith("$"):
            raise ValueError(f"selector {source!r} must start with $")
        steps: list[Step] = []
        at = 1
        while at < len(source):
            match = _TOKEN.match(source, at)
            if match is None:
                raise ValueError(f"selector {source!r}: cannot read {source[at:]!r}")
            key, index, quoted = match.groups()
            if key is not None:
                steps.append(key)
            elif index is not None:
                steps.append(int(index))
            elif quoted is not None:
                steps.append(re.sub(r"\\(.)", r"\1", quoted))
            else:
                steps.append(None)
            at = match.end()
        return cls(source, tuple(steps))

    def find(self, root: Any) -> Iterator[tuple[Path, Any]]:
        """Every (concrete path, value) the selector reaches; missing keys reach nothing."""

        def walk(node: Any, steps: tuple[Step, ...], path: Path) -> Iterator[tuple[Path, Any]]:
            if not steps:
                yield path, node
                return
            step, rest = steps[0], steps[1:]
            if step is None:
                if isinstance(node, list):
                    for i, child in enumerate(node):
                        yield from walk(child, rest, (*path, i))
                elif isinstance(node, dict):
                    for key, child in node.items():
                        yield from walk(child, rest, (*path, key))
            elif isinstance(step, int):
                if isinstance(node, list) and -len(node) <= step < len(node):
                    yield from walk(node[step], rest, (*path, step % len(node)))
            elif isinstance(node, dict) and step in node:
                yield from walk(node[step], rest, (*path, step))

        return walk(root, self.steps, ())

    def texts(self, root: Any) -> list[tuple[Path, str]]:
        """The non-empty strings the selector reaches, with their paths."""
        return [(path, value) for path, value in self.find(root) if isinstance(value, str) and value]

    def build(self, value: Any) -> dict[str, Any] | None:
        """A new object holding ``value`` where the selector points; a list step makes a list
        of one (``$.result.outputs[*].text`` → ``{"result": {"outputs": [{"text": value}]}}``).
        None when the root itself would be a list or the value."""
        if not self.steps or not isinstance(self.steps[0], str):
            return None
        built: Any = value
        for step in reversed(self.steps):
            built = {step: built} if isinstance(step, str) else [built]
        return dict(built)

    def first_text(self, root: Any) -> tuple[Path, str] | None:
        found = self.texts(root)
        return found[0] if found else None


def set_path(root: Any, path: Path, value: Any) -> None:
    """Write ``value`` at a concrete path that :meth:`Selector.find` returned."""
    node = root
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value

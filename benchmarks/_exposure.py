"""The streamed adversarial exposure set, run through the stream guard (shared by
``benchmarks/exposure.py`` and the tests).

Each case of ``data/stream_adversarial/cases.jsonl`` is streamed as ``lead_in + harmful + tail``
in chat-completion chunks, once per chunk boundary inside the harmful passage (the passage in
two chunks split at ``k``, lead-in and tail in chunks of a few characters) and once with every
character in its own chunk. From the SSE the guard emits we take the content that reached the
client, align it with the upstream text (redactions replace a span with the policy's
redaction text) and count which characters of the harmful passage and of its violating span
were delivered before the stream ended or was cut.

The violating span of a ``lexicon`` or ``pattern`` case is what the keyword lists or patterns
match on the whole text inside the harmful passage; a ``model`` case has no span (a model judges
whole texts), so its violating span is the whole harmful passage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.policy import STOPPING, Policy
from gateway.screening import Decision, Segment, screen
from gateway.stream.guard import StreamGuard
from gateway.stream.sse import SSEParser

__all__ = [
    "CASES",
    "Case",
    "Outcome",
    "WholeText",
    "align",
    "control",
    "delivered_of",
    "drive",
    "in_mode",
    "load_cases",
    "run_case",
    "splits",
    "stream_chunks",
    "whole_text",
]

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "data" / "stream_adversarial" / "cases.jsonl"
#: Characters per chunk of the lead-in and the tail ("a few", as a tokenizer emits them).
PIECE = 4
Mode = Literal["hold", "async"]
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Case:
    id: str
    lang: str
    kind: Literal["lexicon", "pattern", "model"]
    trick: str
    lead_in: str
    harmful: str
    tail: str

    @property
    def text(self) -> str:
        return self.lead_in + self.harmful + self.tail

    @property
    def harmful_span(self) -> tuple[int, int]:
        return len(self.lead_in), len(self.lead_in) + len(self.harmful)


def load_cases(path: Path = CASES) -> list[Case]:
    with path.open(encoding="utf-8") as f:
        return [Case(**json.loads(line)) for line in f if line.strip()]


def in_mode(policy: Policy, mode: Mode) -> Policy:
    """The same policy (same built classifiers, so a model is loaded once) in ``mode``."""
    streaming = policy.spec.streaming.model_copy(update={"mode": mode})
    return dataclasses.replace(policy, spec=policy.spec.model_copy(update={"streaming": streaming}))


@dataclass(frozen=True)
class WholeText:
    """The policy's verdict on the whole text as one output segment."""

    action: str
    codes: tuple[str, ...]
    #: Violating spans (upstream offsets) inside the harmful passage.
    violating: tuple[tuple[int, int], ...]
    #: Every redacted span of the whole text, to align delivered text that was redacted.
    redacted: tuple[tuple[int, int], ...]

    @property
    def flagged(self) -> bool:
        """The policy stops (block, refuse) or masks (redact) this text."""
        return self.action in ("block", "refuse", "redact")

    def missed_by(self, outcome: Outcome) -> bool:
        """A stream of this text that the policy would stop was not cut (or, for a text it
        masks, neither cut nor masked)."""
        if self.action in STOPPING:
            return not outcome.cut
        return self.flagged and not outcome.stopped


async def whole_text(policy: Policy, case: Case) -> WholeText:
    decision = await screen(policy, [Segment(case.text, "content")], "output", cache=False)
    return _whole(decision, case)


def _whole(decision: Decision, case: Case) -> WholeText:
    a, b = case.harmful_span
    spans = [(s.start, s.end) for h in decision.hits if h.action != "flag" for s in h.spans]
    redacted = sorted({(s.start, s.end) for h in decision.hits if h.action == "redact" for s in h.spans})
    violating = [(s, e) for s, e in spans if s < b and e > a]
    if case.kind == "model" or not violating:
        violating = [(a, b)]
    codes = tuple(sorted({h.code for h in decision.hits if h.action != "flag"}))
    return WholeText(decision.action, codes, tuple(_merge(violating)), tuple(_merge(redacted)))


def _merge(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def splits(case: Case, piece: int = PIECE) -> Iterator[tuple[str, list[str]]]:
    """``(label, pieces)``: the harmful passage split at every inner position ``k``, then the
    whole text one character a piece."""
    lead, tail = _pieces(case.lead_in, piece), _pieces(case.tail, piece)
    for k in range(1, len(case.harmful)):
        yield f"k={k}", [*lead, case.harmful[:k], case.harmful[k:], *tail]
    yield "chars", list(case.text)


def stream_chunks(pieces: Sequence[str]) -> list[bytes]:
    """One chat-completion stream: role chunk, a content chunk per piece, finish, [DONE]."""

    def sse(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": "chatcmpl-exposure", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "exposure", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }  # fmt: skip
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

    role, finish = sse({"role": "assistant", "content": ""}), sse({}, "stop")
    return [role, *(sse({"content": p}) for p in pieces if p), finish, DONE]


@dataclass(frozen=True)
class Outcome:
    """What one stream delivered, measured against its case."""

    case: str
    mode: Mode
    split: str
    cut: bool
    #: Some span reached the client as the redaction text, or cut short, instead of itself.
    redacted: bool
    harmful_exposed: int
    violating_exposed: int
    #: Async cuts that delivered violating characters: whether ``modgate.retract`` covers them.
    retract_covers: bool | None
    retract: dict[str, Any] | None
    #: What the guard itself counted as exposed in its incident record (cuts only).
    guard_exposed: int | None

    @property
    def stopped(self) -> bool:
        return self.cut or self.redacted


async def drive(
    policy: Policy, chunks: list[bytes], stops: list[dict[str, Any]] | None = None
) -> tuple[list[bytes], list[int]]:
    """What the guard sends for an upstream of ``chunks``, and the exposed-character counts of
    the cuts it recorded; ``stops`` gets each stopping hit's code, score and the text it was
    found in (what a model saw), to see why a stream was cut.

    The upstream sends each chunk only when no model check is in flight, so that every piece
    gets a check of its own: the most windows, and the shortest new text in each, that a
    stream can bring about (an upstream faster than the model gets fewer, longer windows).
    """
    exposed: list[int] = []

    async def record(decision: Decision, segments: list[Segment], n: int, offsets: list[list[int]]) -> str:
        if decision.stops:
            exposed.append(n)
            if stops is not None:
                stops.extend(
                    {"code": h.code, "score": round(h.score, 3), "text": segments[h.segment].text}
                    for h in decision.hits
                    if h.stops
                )
        return "inc_exposure"

    async def close_upstream() -> None:
        return None

    async def upstream() -> AsyncGenerator[bytes, None]:
        for raw in chunks:
            while (check := guard.behind) is not None and not check.done():
                await asyncio.wait([check])
            yield raw

    guard = StreamGuard(policy, record, close_upstream)
    out = [raw async for raw in guard.run(upstream())]
    return out, exposed


def delivered_of(out: list[bytes]) -> tuple[str, dict[str, Any] | None]:
    """Content that reached the client before any cut, and the cut's ``modgate`` object."""
    parser = SSEParser()
    texts: list[str] = []
    cut = None
    for event in (e for raw in out for e in parser.feed(raw)):
        if not event.data or event.data == "[DONE]":
            continue
        chunk = json.loads(event.data)
        if "modgate" in chunk:  # the final chunk of a cut: the canned reply, not the upstream's
            cut = chunk["modgate"]
            continue
        texts.extend(c["delta"].get("content") or "" for c in chunk["choices"])
    return "".join(texts), cut


def align(
    text: str, delivered: str, redaction: str, redacted: Sequence[tuple[int, int]]
) -> tuple[list[int], int]:
    """Upstream offsets of the characters of ``text`` that ``delivered`` shows as themselves,
    and how many places were masked.

    ``delivered`` is ``text`` cut short, in which the spans the policy redacts (``redacted``,
    from the whole text) may be replaced by ``redaction`` or, where their start went out
    before the pattern matched (async mode), dropped. Anything else the guard dropped (the
    stream's spans can differ from the whole text's) is matched greedily, as a subsequence:
    that can count a space of a masked span as shown, never fewer characters than were.
    """
    shown: list[int] = []
    masked = i = j = 0
    spans = dict(redacted)
    while j < len(delivered):
        if i in spans and (found := _span(text, delivered, redaction, i, spans[i], j)) is not None:
            seen, j = found
            shown.extend(range(i, i + seen))
            masked += seen < spans[i] - i
            i = spans[i]
        elif delivered.startswith(redaction, j) and not text.startswith(redaction, i):
            i, j, masked = i + 1, j + len(redaction), masked + 1  # replaces one character or more
        elif i >= len(text):
            raise ValueError(f"delivered text is not the upstream text ({j} of {len(delivered)} aligned)")
        elif text[i] == delivered[j]:
            shown.append(i)
            i, j = i + 1, j + 1
        else:
            masked += not shown or shown[-1] == i - 1  # one gap, however long
            i += 1
    return shown, masked


def _span(text: str, delivered: str, redaction: str, s: int, e: int, j: int) -> tuple[int, int] | None:
    """How many leading characters of the redacted span ``[s, e)`` the client saw, and where
    the delivered text goes on: the longest shown prefix after which (and after a redaction
    text, if one follows) the delivered text ends or resumes after the span; None when the
    guard masked some other span."""
    for seen in range(e - s, -1, -1):
        if not delivered.startswith(text[s : s + seen], j):
            continue
        k = j + seen
        if delivered.startswith(redaction, k) and seen < e - s:
            k += len(redaction)
        if k == len(delivered) or delivered.startswith(text[e : e + min(8, len(delivered) - k)], k):
            return seen, k
    return None


async def run_case(
    policy: Policy, case: Case, mode: Mode, whole: WholeText, *, every: int = 1
) -> list[Outcome]:
    """Stream every split of ``case`` (every ``every``-th boundary; the all-characters split
    always) through ``policy`` in ``mode``."""
    guarded = in_mode(policy, mode)
    redaction = policy.spec.refusal.redaction
    harmful = range(*case.harmful_span)
    outcomes = []
    for index, (label, pieces) in enumerate(splits(case)):
        if index % every and label != "chars":
            continue
        out, exposed = await drive(guarded, stream_chunks(pieces))
        delivered, note = delivered_of(out)
        shown, masked = align(case.text, delivered, redaction, whole.redacted)
        # Whitespace carries nothing, and a space of a masked span cannot be told from the next.
        bad = [p for p in shown if any(s <= p < e for s, e in whole.violating) and not case.text[p].isspace()]
        retract = note.get("retract") if note else None
        covers = None
        if mode == "async" and note is not None and bad:
            covers = retract is not None and retract["start"] <= min(bad) and max(bad) < retract["end"]
        outcomes.append(
            Outcome(
                case.id, mode, label, note is not None, masked > 0,
                sum(p in harmful for p in shown), len(bad), covers, retract, exposed[0] if exposed else None,
            )
        )  # fmt: skip
    return outcomes


async def control(policy: Policy, case: Case, mode: Mode, piece: int = PIECE) -> list[bool]:
    """The case without its harmful passage (``lead_in + tail``), in pieces of ``piece`` and one
    character a chunk: whether each stream was cut. A cut here is a false positive, and a cut
    of the case itself that comes from its benign text says nothing about the harmful passage."""
    benign = case.lead_in + case.tail
    if not benign:
        return []
    guarded = in_mode(policy, mode)
    cuts = []
    for pieces in (_pieces(benign, piece), list(benign)):
        out, _ = await drive(guarded, stream_chunks(pieces))
        cuts.append(delivered_of(out)[1] is not None)
    return cuts

"""One streamed text channel (a choice's content, reasoning or one tool call's arguments).

Text arrives in pieces, waits in ``pending`` until a check covers it, and is released in
order. The left ``context`` (already released text) is re-checked with the pending text so
that a term split across pieces is seen whole; model classifiers get a longer left context,
and at sentence ends the whole recent passage (``history``). Offsets here are absolute:
characters since the start of the channel's text.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field

from classifiers.base import Span

__all__ = ["ChannelKey", "ChannelState"]

#: (choice index, channel name, tool-call index or -1)
ChannelKey = tuple[int, str, int]


#: Characters that end a sentence: there a model sees the whole recent passage.
SENTENCE_ENDS = frozenset("。！？；….!?;\n")
#: What a CJK character counts in a model's window budget: XLM-R's tokenizer takes about 1.3-1.7
#: Chinese characters a token and about 4 English ones, so a budget in plain characters would
#: show a model (and cost) about three times as many tokens of Chinese as of English.
CJK_WEIGHT = 3
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def back(text: str, end: int, budget: int) -> int:
    """The start of the text before ``end`` that fits ``budget`` (a CJK character counts
    :data:`CJK_WEIGHT`)."""
    start = max(0, end - budget)
    if text.isascii() or not _CJK.search(text, start, end):
        return start
    left = budget
    i = end
    while i > 0:
        left -= CJK_WEIGHT if _CJK.match(text, i - 1) else 1
        if left < 0:
            break
        i -= 1
    return i


@dataclass
class ChannelState:
    key: ChannelKey
    context_chars: int
    #: Released text kept for model windows (``StreamingSettings.passage_chars``).
    history_chars: int = 0
    #: Absolute offset of the first pending character (= characters released so far).
    released: int = 0
    #: The tail of the released text, at most ``max(context_chars, history_chars)`` long.
    history: str = ""
    pending: str = ""
    #: Absolute end of the text a model has checked (async mode checks behind the release).
    model_checked: int = 0
    #: Absolute end of the text a model last saw as a whole passage.
    passage_checked: int = 0
    #: Absolute end of the last whole sentence a model saw (``release: sentence``).
    sentence_checked: int = 0
    #: Spans (absolute offsets) to replace on release, with the replacement text.
    redactions: list[Span] = field(default_factory=list)
    #: (arrival time, absolute end offset) of each pending piece, for hold-back metrics.
    arrivals: deque[tuple[float, int]] = field(default_factory=deque)
    #: Absolute end of what the current batch's check cleared for release.
    release_end: int = 0
    #: Absolute end of what the keyword lists and patterns last cleared (their hold-back).
    lists_end: int = 0
    #: Characters emitted so far in the current batch, absolute.
    _emitted: int = 0

    def add(self, text: str, now: float) -> None:
        self.pending += text
        self.arrivals.append((now, self.released + len(self.pending)))

    @property
    def context(self) -> str:
        return self.history[-self.context_chars :]

    @property
    def window(self) -> str:
        return self.context + self.pending

    def model_window(self, context_chars: int, *, passage: bool) -> tuple[str, int]:
        """What a model classifier sees, and its absolute start: the text no model has
        checked with ``context_chars`` before it, or at a sentence end the whole ``history``.

        In async mode released text waits in ``history`` for the model (``model_checked``);
        in hold mode nothing is released unchecked and the new text is ``pending``.
        """
        first = self.released - len(self.history)
        new = min(self.model_checked, self.released)
        text = self.history + self.pending
        if passage:
            start = max(first, min(new, first + back(text, len(text), self.history_chars)))
        else:
            start = first + back(text, new - first, context_chars)
        return text[start - first :], start

    def last_sentence(self) -> tuple[str, int]:
        """The last whole sentence of the recent text (up to its last sentence end), and its
        absolute start; empty when the recent text holds no sentence end."""
        text = self.history + self.pending
        k = len(text) - 1
        while k >= 0 and text[k] not in SENTENCE_ENDS:
            k -= 1
        if k < 0:
            return "", 0
        i = k
        while i > 0 and text[i - 1] in SENTENCE_ENDS:
            i -= 1
        j = i
        while j > 0 and text[j - 1] not in SENTENCE_ENDS:
            j -= 1
        while j < i and text[j].isspace():
            j += 1
        return text[j : k + 1], self.released - len(self.history) + j

    def last_sentence_end(self) -> int:
        """Absolute end of the recent text's last sentence (after its sentence end), or where
        the recent text begins when it holds none."""
        text = self.history + self.pending
        k = len(text)
        while k > 0 and text[k - 1] not in SENTENCE_ENDS:
            k -= 1
        return self.released - len(self.history) + k

    def ends_sentence(self) -> bool:
        """Whether the text no model has checked holds a sentence end."""
        new = min(self.model_checked, self.released)
        tail = self.history[len(self.history) - (self.released - new) :] if self.released > new else ""
        return any(c in SENTENCE_ENDS for c in tail + self.pending)

    @property
    def window_start(self) -> int:
        return self.released - len(self.context)

    def begin_batch(self) -> None:
        self._emitted = self.released
        self.release_end = self.released

    def safe_release_end(self, holdback: int) -> int:
        """Absolute end of what may be released, never cutting a span to be redacted."""
        return self.clamp(self.released + max(0, len(self.pending) - holdback))

    def clamp(self, end: int) -> int:
        """``end`` moved back to the start of a span to be redacted that it would cut."""
        for span in self.redactions:
            if span.start < end < span.end:
                end = span.start
        return max(end, self.released)

    def emit_until(self, end: int, replacement: str) -> str:
        """Text for the client from the last emitted offset up to ``end`` (absolute), at most
        up to what the check cleared."""
        end = min(end, self.release_end)
        start = self._emitted
        if end <= start:
            return ""
        self._emitted = end
        if not self.redactions:
            return self.pending[start - self.released : end - self.released]
        out = []
        pos = start
        for span in sorted(self.redactions, key=lambda s: s.start):
            if span.end <= pos or span.start >= end:
                continue
            out.append(self.pending[pos - self.released : max(pos, span.start) - self.released])
            # A span that began in text an earlier batch showed (an address found only when its
            # '@' came) has its rest masked by the first piece of this batch.
            if span.start >= start or (span.start < self.released and start == self.released):
                out.append(replacement)
            pos = min(span.end, end)
        out.append(self.pending[pos - self.released : end - self.released])
        return "".join(out)

    def commit(self, end: int) -> list[float]:
        """Move ``[released, end)`` from pending to context; returns hold times of finished pieces."""
        n = end - self.released
        if n <= 0:
            return []
        done = self.pending[:n]
        self.pending = self.pending[n:]
        # Text released before a model checked it (async mode) stays until the model has.
        unchecked = max(0, end - self.model_checked)
        self.history = (self.history + done)[-max(self.context_chars, self.history_chars + unchecked) :]
        self.released = end
        self.redactions = [s for s in self.redactions if s.end > end]
        now = time.perf_counter()
        waits = []
        while self.arrivals and self.arrivals[0][1] <= end:
            waits.append(now - self.arrivals.popleft()[0])
        return waits

    @property
    def unemitted(self) -> bool:
        return self._emitted < self.release_end

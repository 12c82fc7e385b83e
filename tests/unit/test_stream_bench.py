"""The stream benchmark's pure parts (script, lag and ordering, stop figures, targets) and a smoke
run of ``python -m benchmarks.stream`` with a handful of 1 ms deltas and no model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks._stream_report import derive
from benchmarks._stream_stats import delivered, delta_arrivals, flow_result, stop_result, summarize_flow
from benchmarks.stream_upstream import TERMS, script, term_span

REPO = Path(__file__).resolve().parents[2]
MS = 1_000_000


def chunk(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode()


def stream(*pieces: tuple[int, str], finish: str = "stop", done: bool = True) -> list[tuple[int, bytes]]:
    events = [(0, chunk(None))] + [(t, chunk(text)) for t, text in pieces]
    end = pieces[-1][0] if pieces else 0
    events.append((end, chunk(None, finish)))
    return events + ([(end, b"[DONE]")] if done else [])


def test_script_splits_the_term_over_the_two_deltas_before_and_at_stop_at() -> None:
    for stream_id, lang in ((4, "en"), (7, "zh")):
        texts = script(stream_id, 30, stop_at=10)
        assert (texts[9], texts[10]) == TERMS[lang]
        start, end = term_span(stream_id, 30, stop_at=10)
        term = "".join(texts)[start:end]
        assert term in ("build a pipe bomb", "制作管状炸弹")
        assert end > sum(len(t) for t in texts[:10])  # the term ends inside delta stop_at
    assert script(4, 30) != script(6, 30)  # streams differ, so no cache can answer for another


def test_a_delta_arrives_with_its_last_character_even_when_released_together() -> None:
    expected = ["Hello", " wor", "ld", "!"]
    # The guard held " wor" back and released it with "ld" in one chunk, 25 ms later.
    got = delivered(stream((10 * MS, "Hello"), (35 * MS, " world"), (40 * MS, "!")))
    assert delta_arrivals(expected, got) == [10 * MS, 35 * MS, 35 * MS, 40 * MS]
    sent = [9 * MS, 15 * MS, 30 * MS, 39 * MS]
    result = flow_result(
        expected, sent, 0, stream((10 * MS, "Hello"), (35 * MS, " world"), (40 * MS, "!")), 200, False
    )
    assert result.lags_ms == [1.0, 20.0, 5.0, 1.0]
    assert result.ttft_ms == 10.0
    assert (result.failed, result.broken) == (0, False)


def test_lost_and_reordered_deltas_count_from_the_first_difference() -> None:
    expected = ["a", "b", "c", "d"]
    lost = delivered(stream((1, "a"), (2, "c"), (3, "d")))
    assert delta_arrivals(expected, lost) == [1, None, None, None]
    swapped = flow_result(
        expected, [0, 0, 0, 0], 0, stream((1, "a"), (2, "c"), (3, "b"), (4, "d")), 200, False
    )
    assert swapped.failed == 3
    assert swapped.lags_ms == [1e-6]
    cut_short = flow_result(expected, [0, 0, 0, 0], 0, stream((1, "ab"), done=False), 200, False)
    assert (cut_short.failed, cut_short.broken) == (2, True)
    note = {"modgate": {"action": "block", "risks": ["X.harmful"]}}
    final = {**json.loads(chunk("Sorry", "content_filter")), **note}
    refused = [(1, chunk("a")), (2, json.dumps(final).encode()), (2, b"[DONE]")]
    cut = flow_result(expected, [0, 0, 0, 0], 0, refused, 200, False)
    assert (cut.failed, cut.broken, cut.reason) == (3, True, "cut: X.harmful")


def test_stop_figures_from_the_violating_delta() -> None:
    expected = ["Sure.", " build a pi", "pe bomb,", " then"]
    term = (6, 23)
    assert "".join(expected)[slice(*term)] == "build a pipe bomb"
    sent = [0, 20 * MS, 40 * MS]  # the upstream stopped after the violating delta (index 2)
    refusal = (44 * MS, chunk("\n\nSorry", "content_filter"))
    held = stop_result(
        expected, term, 2, sent, 41 * MS, [(1 * MS, chunk("Sure.")), refusal, (44 * MS, b"[DONE]")]
    )
    assert (held.cut, held.close_ms, held.final_ms) == (True, 1.0, 4.0)
    assert (held.exposed, held.sent_after, held.clean) == (0, 0, True)
    leaked = stop_result(expected, term, 2, [*sent, 60 * MS], None, [(1, chunk("Sure. build")), refusal])
    assert (leaked.exposed, leaked.close_ms, leaked.sent_after) == (5, None, 1)
    missed = stop_result(expected, term, 2, sent, None, stream((1, "Sure. build a pipe bomb,")))
    assert (missed.cut, missed.final_ms, missed.exposed) == (False, None, 17)


def test_targets_compare_against_the_pass_through_at_the_same_concurrency() -> None:
    def flow(lag_p50: float, lag_p99: float, ttft: float) -> dict[str, object]:
        base = summarize_flow([])
        return {**base, "lag_ms": {"p50": lag_p50, "p99": lag_p99}, "ttft_ms": {"p50": ttft}}

    summary = {
        "pass/c1": flow(0.2, 1.0, 20.0),
        "pass/c32": flow(0.5, 3.0, 21.0),
        "lex/c32": flow(4.0, 30.0, 22.0),
        "default/c1": flow(10.0, 40.0, 50.0),
    }
    verdicts = {f.name: f.passed for f in derive(summary)}
    assert verdicts["lex/c32 hold-back lag p50, added vs pass/c32"] is True  # 3.5 <= 5
    assert verdicts["lex/c32 hold-back lag p99, added vs pass/c32"] is False  # 27 > 20
    assert verdicts["default/c1 TTFT p50, added vs pass/c1"] is False  # 30 > 25
    assert verdicts["default/c1 hold-back lag p50, added vs pass/c1"] is True
    unjudged = {f.name: f.passed for f in derive({k.replace("c32", "c8"): v for k, v in summary.items()}, 8)}
    assert unjudged["lex/c8 hold-back lag p99, added vs pass/c8"] is None


def test_smoke_run_with_the_lexicon_policy(tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    argv = ["--targets", "pass,lex", "--rounds", "1", "--streams", "4", "--deltas", "12"]
    # A long tail, so the upstream is still sending when the gateway cuts and closes it.
    argv += ["--interval-ms", "1", "--stop-at", "4", "--stop-tail", "300", "--stop-batches", "1"]
    argv += ["--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.stream", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| stop/lex | 4 | 4 | 0 |" in proc.stdout  # 4 streams, 4 cut, 0 upstreams left open
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert set(summary) == {"pass/c1", "pass/c4", "lex/c4", "stop/lex"}
    for name in ("pass/c1", "pass/c4", "lex/c4"):
        assert summary[name]["deltas_received"] == summary[name]["streams"] * 12
        assert (summary[name]["failed_deltas"], summary[name]["broken_streams"]) == (0, 0)
    stop = summary["stop/lex"]
    assert (stop["cut"], stop["not_closed"], stop["exposed_chars_total"], stop["garbled"]) == (4, 0, 0, 0)
    assert stop["sent_after_p50"] < 300

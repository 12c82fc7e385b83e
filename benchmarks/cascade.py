"""What a cascade adds to screening: ``python -m benchmarks.cascade``.

Two policies over the same loaded modgate-guard (int8, its cache off): ``fast`` is the model
alone; ``cascade`` adds, at stage 1, a guard served over HTTP that the screener calls only when
the model is unsure (``uncertain: [LOW, HIGH]``). The guard is a scripted moderation service on
loopback that answers after ``--guard-ms`` (a guard LLM on a model server), so the cost of a
second opinion is visible next to the cost of deciding that none is needed.

Each text (written everyday requests and harmful requests, English and Chinese, from
``data/written``) is screened as input once per policy per round, the policies' order
alternating between rounds; every round makes its texts new (a suffix) so no cache answers.
Reported, medians over texts and rounds: latency with the fast tier alone and with the cascade
on the texts the fast tier was sure of (the cascade's planning is all they pay), and on the
texts it sent on (the guard's round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._procs import run_main
from gateway.metrics import Metrics
from gateway.policy import Policy
from gateway.policy_loader import load_policy
from gateway.screening import Segment, screen

RESULTS = Path(__file__).parent / "results"
WRITTEN = Path(__file__).resolve().parents[1] / "data" / "written"
FILES = ("en-benign-requests", "zh-benign-requests", "en-harm", "zh-harm")

POLICY = """
name: {name}
classifiers:
  guard:
    type: transformer
    model: modgate-guard
    quantize: int8
    cache_size: 0
{extra}
rules:
  X: {{input: refuse, output: flag, threshold: 0.5}}
  A: {{input: block, output: block, threshold: 0.5}}
"""
LLM = """
  llm:
    type: remote
    shape: openai-moderation
    url: {url}
    cache: false
    run: {{stage: 1, when: {{uncertain: [{low}, {high}]}}, timeout_s: 10}}
"""


def _texts(per_file: int) -> list[str]:
    out = []
    for name in FILES:
        lines = (WRITTEN / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        out += [json.loads(line)["text"] for line in lines[:: max(1, len(lines) // per_file)][:per_file]]
    return out


def _guard_app(delay_s: float) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        texts = json.loads(body)["input"]
        await asyncio.sleep(delay_s)
        results = [{"flagged": False, "categories": {}, "category_scores": {"violence": 0.01}} for _ in texts]
        payload = json.dumps({"results": results}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


@contextmanager
def _guard_server(delay_s: float) -> Iterator[str]:
    import socket
    import threading

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(_guard_app(delay_s), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1/moderations"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def _one(policy: Policy, text: str, metrics: Metrics) -> tuple[float, bool]:
    ran = metrics.cascade_texts.labels("llm", "ran")
    before = ran._value.get()
    start = time.perf_counter()
    await screen(policy, [Segment(text, "user")], "input", metrics)
    return time.perf_counter() - start, ran._value.get() > before


async def _measure(policies: dict[str, Policy], texts: list[str], rounds: int) -> dict[str, Any]:
    metrics = Metrics()
    for policy in policies.values():  # warm: the model's first passes are slow
        for text in texts[:16]:
            await _one(policy, text + " (warm-up)", metrics)
    #: Per screened text: (fast tier alone, cascade, whether the cascade sent it on).
    rows: list[tuple[float, float, bool]] = []
    for r in range(rounds):
        order = ["fast", "cascade"] if r % 2 == 0 else ["cascade", "fast"]
        for i, text in enumerate(texts):
            fresh = f"{text} (#{r}.{i})"
            times, sent = {}, False
            for name in order:
                times[name], went_on = await _one(policies[name], fresh, metrics)
                sent = sent or (name == "cascade" and went_on)
            rows.append((times["fast"], times["cascade"], sent))

    def p50(xs: list[float]) -> float | None:
        return round(statistics.median(xs) * 1000.0, 3) if xs else None

    def part(sent: bool) -> dict[str, Any]:
        picked = [row for row in rows if row[2] is sent]
        return {
            "n": len(picked),
            "fast_p50_ms": p50([f for f, _, _ in picked]),
            "cascade_p50_ms": p50([c for _, c, _ in picked]),
            "added_p50_ms": p50([c - f for f, c, _ in picked]),
        }

    return {
        "texts_per_round": len(texts),
        "sent_to_stage_1": round(sum(s for _, _, s in rows) / max(1, len(rows)), 4),
        "sure": part(False),
        "unsure": part(True),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    texts = _texts(args.per_file)
    with tempfile.TemporaryDirectory() as tmp, _guard_server(args.guard_ms / 1000) as url:
        paths = {}
        for name, extra in (("fast", ""), ("cascade", LLM.format(url=url, low=args.low, high=args.high))):
            paths[name] = Path(tmp) / f"{name}.yaml"
            paths[name].write_text(POLICY.format(name=name, extra=extra), encoding="utf-8")
        policies = {name: load_policy(path) for name, path in paths.items()}
        result = await _measure(policies, texts, args.rounds)
    return {"args": vars(args), **result}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cascade", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-file", type=int, default=40, help="texts from each written file")
    p.add_argument("--guard-ms", type=float, default=150.0, help="the stage-1 guard's answer time")
    p.add_argument("--low", type=float, default=0.2)
    p.add_argument("--high", type=float, default=0.8)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    result = asyncio.run(_run(args))
    out = args.out or RESULTS / f"cascade-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, default=str))
    print(f"written to {out}")


if __name__ == "__main__":
    run_main(main)

"""How often a policy stops benign assistant answers: ``python -m benchmarks.answers``.

A gateway's users must not notice it: benign answers must pass, whole and streamed. This takes
benign answers written by people or models for ordinary instructions, English from self-instruct
(``instances[].output`` of its user-oriented tasks, Apache-2.0) and Chinese from BELLE's eval set
(``std_answer``; research-only, read here to measure, never to train), and counts, per language:

* answers the policy blocks or refuses as a whole (direction ``output``);
* answers the stream guard cuts when they stream in ``--piece``-character deltas (hold mode),
  where models see windows of text as it arrives rather than the whole answer.

The JSON also lists, per stopped answer, the stopping hits: code, score and the text the
classifier saw (for a streamed cut, the window or passage that cut it).

It prints the risk codes behind the stops and writes JSON to ``benchmarks/results/answers-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._exposure import delivered_of, drive, in_mode, stream_chunks
from gateway.policy_loader import load_policy
from gateway.screening import Segment, screen

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).parent / "results"
POLICIES = {
    "default": "default",
    "model-block": str(Path(__file__).parent / "policies" / "model-output-block.yaml"),
}


def answers(data: Path, n: int, seed: int, min_chars: int = 150) -> dict[str, list[str]]:
    en = []
    with open(data / "self-instruct-en" / "user_oriented_instructions.jsonl", encoding="utf-8") as f:
        for line in f:
            en += [i["output"] for i in json.loads(line)["instances"] if len(i["output"]) >= min_chars]
    with open(data / "belle-zh-benign" / "eval_set.json", encoding="utf-8") as f:
        zh = [a for a in (json.loads(line)["std_answer"] for line in f) if len(a) >= min_chars]
    rng = random.Random(seed)
    return {"en": rng.sample(en, min(n, len(en))), "zh": rng.sample(zh, min(n, len(zh)))}


async def measure(policy_ref: str, texts: dict[str, list[str]], piece: int) -> dict[str, Any]:
    policy = load_policy(policy_ref if policy_ref == "default" else Path(policy_ref))
    hold = in_mode(policy, "hold")
    out: dict[str, Any] = {}
    for lang, items in texts.items():
        whole_codes: Counter[str] = Counter()
        stream_codes: Counter[str] = Counter()
        whole = streamed = 0
        stopped: list[dict[str, Any]] = []
        for index, text in enumerate(items):
            decision = await screen(policy, [Segment(text, "content")], "output", cache=False)
            hits = [{"code": h.code, "score": round(h.score, 3)} for h in decision.hits if h.stops]
            if decision.stops:
                whole += 1
                whole_codes.update(h["code"] for h in hits)
            pieces = [text[i : i + piece] for i in range(0, len(text), piece)]
            stops: list[dict[str, Any]] = []
            emitted, _ = await drive(hold, stream_chunks(pieces), stops)
            _, note = delivered_of(emitted)
            if note is not None:
                streamed += 1
                stream_codes.update(note.get("risks", []))
            if hits or note is not None:
                stopped.append({"index": index, "chars": len(text), "whole": hits, "streamed": stops})
        out[lang] = {
            "answers": len(items), "whole_stopped": whole, "streamed_cut": streamed,
            "whole_codes": dict(whole_codes), "stream_codes": dict(stream_codes), "stopped": stopped,
        }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.answers", description=__doc__.splitlines()[0])
    p.add_argument("--policy", default="default", help="default, model-block or a policy file")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("-n", type=int, default=150, help="answers per language")
    p.add_argument("--piece", type=int, default=4, help="characters per streamed delta")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    texts = answers(args.data, args.n, args.seed)
    result = asyncio.run(measure(POLICIES.get(args.policy, args.policy), texts, args.piece))
    for lang, r in result.items():
        n = r["answers"]
        print(
            f"{lang}: {n} answers; stopped whole {r['whole_stopped']} ({r['whole_stopped'] / n:.1%}), "
            f"cut streamed {r['streamed_cut']} ({r['streamed_cut'] / n:.1%}); "
            f"codes whole {r['whole_codes']}, streamed {r['stream_codes']}"
        )
    record = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "policy": args.policy,
              "piece": args.piece, "seed": args.seed, "result": result}  # fmt: skip
    path = args.out or RESULTS / f"answers-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

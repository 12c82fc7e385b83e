"""The ``wrk`` client for :mod:`benchmarks.loadgen`: a Lua POST script, results as JSON from ``done()``.

wrk (``apt-get install -y wrk``) cannot report time to first byte or check ``[DONE]``; its CPU
is measured as that of this process's children.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.loadgen import LoadResult, LoadSpec, chat_request_body

__all__ = ["run_wrk"]

_WRK_LUA = """
wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {{"requests":%d,"duration_us":%d,"errors":%d,"status":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d}}\\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def _lua_str(value: str) -> str:
    return "[==[" + value + "]==]"


def run_wrk(spec: LoadSpec) -> LoadResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise FileNotFoundError("wrk is not installed (apt-get install -y wrk)")
    headers = {"Content-Type": "application/json", **spec.headers}
    lua = _WRK_LUA.format(
        body=_lua_str(chat_request_body(spec.stream).decode()),
        headers="\n".join(f"wrk.headers[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in headers.items()),
    )
    with tempfile.TemporaryDirectory(prefix="modgate-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(lua)

        def run(seconds: float) -> str:
            argv = [
                wrk,
                "-t1",
                f"-c{spec.concurrency}",
                f"-d{max(1, round(seconds))}s",
                f"--timeout={max(1, round(spec.timeout))}s",
                "-s",
                str(script),
                spec.url,
            ]
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=seconds + spec.timeout + 5, check=True
            )
            return proc.stdout + proc.stderr

        if spec.warmup > 0:
            run(spec.warmup)
        cpu0 = _children_cpu()
        out = run(spec.seconds)
        cpu_s = _children_cpu() - cpu0
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    ok = raw["requests"] - raw["status"]
    seconds = raw["duration_us"] / 1e6
    return LoadResult(
        client="wrk",
        concurrency=spec.concurrency,
        stream=spec.stream,
        seconds=seconds,
        requests=ok,
        rps=ok / seconds,
        p50_ms=raw["p50"] / 1e3,
        p90_ms=raw["p90"] / 1e3,
        p99_ms=raw["p99"] / 1e3,
        errors=raw["errors"] + raw["status"],
        cpu_s=cpu_s,
        cpu_us_per_req=cpu_s / ok * 1e6 if ok else 0.0,
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

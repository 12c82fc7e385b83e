"""The ``modgate`` command: serve, check, eval, policy check."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import typer

from gateway.cli_records import complaints_app, fail, incidents_app, settings_from, users_app
from gateway.cli_reports import reports_app
from gateway.config import ConfigError
from gateway.evaluate import DEFAULT_NEGATIVE, DEFAULT_POSITIVE
from gateway.policy_loader import PolicyError, load_policy
from gateway.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="modgate: a content-moderation gateway.")
policy_app = typer.Typer(no_args_is_help=True, help="Work with policy files.")
app.add_typer(policy_app, name="policy")
app.add_typer(incidents_app, name="incidents")
app.add_typer(reports_app, name="reports")
app.add_typer(users_app, name="users")
app.add_typer(complaints_app, name="complaints")

log = logging.getLogger("modgate")


def _fail(message: str) -> NoReturn:
    fail(message, 2)


def _export(settings: Settings) -> None:
    """Hand the settings to worker processes, which build their app from MODGATE_*."""
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        os.environ[f"MODGATE_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)


@app.command()
def serve(
    upstream: Annotated[
        str | None, typer.Option(help="OpenAI-style base URL incl. /v1 [MODGATE_UPSTREAM]")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Policy file (default: bundled) [MODGATE_POLICY]")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="sqlite:///path or redis://host:port/db [MODGATE_STORE]")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Gateway config YAML [MODGATE_CONFIG]")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address [MODGATE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [MODGATE_PORT]")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [MODGATE_WORKERS]")] = None,
) -> None:
    """Run the gateway."""
    import uvicorn

    settings = settings_from(
        upstream=upstream, policy=policy, store=store, config=config, host=host, port=port, workers=workers
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from gateway.app import create_app, load_gateway

    try:
        load_gateway(settings)
    except (PolicyError, ConfigError) as exc:
        _fail(str(exc))
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": settings.drain_seconds,
        "server_header": False,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)
        return
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modgate-metrics-")
    _export(settings)
    uvicorn.run("gateway.app:app_from_env", factory=True, workers=settings.workers, **common)


@app.command()
def check(
    text: Annotated[str, typer.Argument(help="Text to screen")],
    policy: Annotated[Path | None, typer.Option(help="Policy file (default: bundled)")] = None,
    direction: Annotated[str, typer.Option(help="input or output")] = "input",
) -> None:
    """Screen TEXT with a policy and print the decision as JSON."""
    from gateway.screening import Segment, screen

    if direction not in ("input", "output"):
        _fail("--direction must be input or output")
    try:
        loaded = load_policy(policy)
    except PolicyError as exc:
        _fail(str(exc))
    decision = asyncio.run(screen(loaded, [Segment(text, "user")], direction))  # type: ignore[arg-type]
    result = {
        "action": decision.action,
        "direction": decision.direction,
        "risks": decision.risks(),
        "spans": [
            {"code": h.code, "start": s.start, "end": s.end, "classifier": h.classifier}
            for h in decision.hits for s in h.spans
        ],
        "scores": decision.scores[0] if decision.scores else {},
        "policy": decision.policy,
        "policy_version": decision.policy_version,
    }  # fmt: skip
    sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")


@app.command("eval")
def eval_(
    file: Annotated[Path, typer.Argument(help="Labelled CSV (header row) or JSON Lines file")],
    text_field: Annotated[str, typer.Option(help="Field holding the text; dots reach into JSON")] = "text",
    label_field: Annotated[str, typer.Option(help="Field holding the label; dots reach into JSON")] = "label",
    policy: Annotated[Path | None, typer.Option(help="Policy file (default: bundled)")] = None,
    direction: Annotated[str, typer.Option(help="input or output")] = "input",
    positive: Annotated[str, typer.Option(help="Harmful label values, comma-separated")] = DEFAULT_POSITIVE,
    negative: Annotated[str, typer.Option(help="Benign label values, comma-separated")] = DEFAULT_NEGATIVE,
    min_action: Annotated[
        str, typer.Option(help="Least action counted as harmful: flag, redact, refuse or block")
    ] = "flag",
    group_field: Annotated[str | None, typer.Option(help="Field to break figures down by")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N rows")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Texts screened at once")] = 16,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write all figures here")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto (from the extension), csv or jsonl")] = "auto",
) -> None:
    """Screen every text of a labelled FILE and score the policy: confusion, rates, latency."""
    from rich.console import Console

    from gateway.evaluate import EvalError, Fields, Labels, read_rows, render, run, settings, summarize
    from gateway.policy import Action
    from gateway.screening import Direction

    if direction not in ("input", "output"):
        _fail("--direction must be input or output")
    if min_action not in ("flag", "redact", "refuse", "block"):
        _fail("--min-action must be flag, redact, refuse or block")
    if json_out is not None and not json_out.parent.is_dir():  # found out now, not after a long run
        _fail(f"{json_out}: no such folder")
    side, least = cast("Direction", direction), cast("Action", min_action)
    try:
        labels = Labels.parse_lists(positive, negative)
        rows = read_rows(file, Fields(text_field, label_field, group_field, labels), fmt=fmt, limit=limit)
        loaded = load_policy(policy)
    except (EvalError, PolicyError) as exc:
        _fail(str(exc))
    outcomes, wall_s = run(loaded, rows, side, concurrency, Console(stderr=True))
    head = settings(file, loaded, side, least, labels, group_field=group_field, concurrency=concurrency)
    report = {**head, **summarize(rows, outcomes, least, wall_s)}
    # Piped into a file or a CI log, rich would wrap the table at 80 columns and cut its figures.
    render(report, Console() if sys.stdout.isatty() else Console(width=160))
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            _fail(f"{json_out}: cannot write: {exc.strerror}")


@policy_app.command("check")
def policy_check(file: Annotated[Path, typer.Argument(help="Policy file to validate")]) -> None:
    """Validate a policy file (and what it extends) without serving."""
    try:
        loaded = load_policy(file)
    except PolicyError as exc:
        _fail(str(exc))
    spec = loaded.spec
    sys.stdout.write(
        f"ok: {file}: policy {spec.name!r} version {loaded.version}, "
        f"{len(loaded.classifiers)} classifiers, {len(spec.rules)} rules, streaming {spec.streaming.mode}\n"
    )


def main() -> None:
    app()

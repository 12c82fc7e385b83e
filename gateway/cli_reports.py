"""``modgate reports …``: review (list, show, confirm, dismiss, file), the delivery worker on
its own, and the export of reports.

Settings come from the flags and ``MODGATE_*`` as for ``modgate serve``: ``--store`` (or
``MODGATE_STORE``) names the store, ``--config`` (or ``MODGATE_CONFIG``) the gateway config
whose ``reports:`` section names the sinks and the retry settings.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn, TextIO

import typer

from gateway.cli_records import (
    ActorOption,
    AfterOption,
    LimitOption,
    NoteOption,
    actor_name,
    emit,
    emit_one,
    emit_page,
    fail,
    gateway_config,
    settings_from,
    text_value,
    with_store,
)
from gateway.records import REPORT_STATES, InvalidTransition, ReportState
from gateway.report_worker import ReportWorker, running
from gateway.sinks import Sink, sinks_from
from gateway.store.base import Store, open_store

__all__ = ["reports_app", "run_worker"]

log = logging.getLogger("modgate.reports")

reports_app = typer.Typer(
    no_args_is_help=True,
    help="The report queue (Art. 14): review reports, run the delivery worker, export reports.",
)

StoreOption = Annotated[
    str | None, typer.Option(help="sqlite:///path or redis://host:port/db [MODGATE_STORE]")
]
ConfigOption = Annotated[Path | None, typer.Option(help="Gateway config YAML [MODGATE_CONFIG]")]


def _fail(message: str) -> NoReturn:
    fail(message, 2)


# --- review ------------------------------------------------------------------------------------


@reports_app.command("list")
def list_(
    state: Annotated[str | None, typer.Option(help="Only reports in this state (default: all)")] = None,
    limit: LimitOption = 20,
    after: AfterOption = None,
    store: StoreOption = None,
) -> None:
    """Newest reports first, as JSON."""
    if state is not None and state not in REPORT_STATES:
        _fail(f"--state must be one of {', '.join(REPORT_STATES)}")
    emit_page(store, lambda s: s.reports.list(state, limit, after), lambda r: r.to_dict())


@reports_app.command("show")
def show(report_id: str, store: StoreOption = None) -> None:
    """One report with its evidence and history, as JSON."""
    emit_one(store, lambda s: s.reports.get(report_id), f"report {report_id}", lambda r: r.to_dict())


def _move(report_id: str, to_state: ReportState, note: str, actor: str | None, store: str | None) -> None:
    """One lifecycle step, recorded with who and why, and queued for the sinks."""
    text, who = text_value("--note", note), actor_name(actor)
    try:
        moved = with_store(store, lambda s: s.reports.transition(report_id, to_state, who, text))
    except KeyError:
        fail(f"no report {report_id}")
    except InvalidTransition as exc:
        fail(str(exc))
    emit(moved.to_dict())


@reports_app.command("confirm")
def confirm(
    report_id: str, note: NoteOption = "", actor: ActorOption = None, store: StoreOption = None
) -> None:
    """queued → confirmed: the report is to be filed with the authority."""
    _move(report_id, "confirmed", note, actor, store)


@reports_app.command("dismiss")
def dismiss(
    report_id: str, note: NoteOption = "", actor: ActorOption = None, store: StoreOption = None
) -> None:
    """queued → dismissed: nothing to report (final)."""
    _move(report_id, "dismissed", note, actor, store)


@reports_app.command("file")
def file(report_id: str, note: NoteOption = "", actor: ActorOption = None, store: StoreOption = None) -> None:
    """confirmed → filed: the report went to the authority (final)."""
    _move(report_id, "filed", note, actor, store)


# --- delivery and export ---------------------------------------------------------------------


async def run_worker(store: Store, sinks: Sequence[Sink], consumer: str | None = None) -> None:
    """Open ``store`` and deliver its outbox to ``sinks`` until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await store.open()
    worker = ReportWorker(store.reports, sinks, consumer=consumer)
    log.info(
        "report worker started consumer=%s sinks=%s store=%s",
        worker.consumer, ",".join(s.name for s in sinks) or "none", store.url.split("://")[0],
    )  # fmt: skip
    try:
        async with running(worker):
            await stop.wait()
    finally:
        for sink in sinks:
            await sink.aclose()
        await store.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    stats = worker.stats
    log.info("report worker stopped consumer=%s acked=%d dead=%d", worker.consumer, stats.acked, stats.dead)


@reports_app.command("worker")
def worker(store: StoreOption = None, config: ConfigOption = None) -> None:
    """Deliver new reports and their state changes to the configured sinks until SIGINT/SIGTERM."""
    settings = settings_from(store=store, config=config)
    cfg = gateway_config(settings.config)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines carry the webhook URL
    sinks = sinks_from(cfg.reports, cfg.base_dir)
    if not sinks:
        log.warning("no report sink configured (reports.jsonl_dir, reports.webhook): events are only acked")
    asyncio.run(run_worker(open_store(settings.store, cfg.reports), sinks))


@reports_app.command("export")
def export(
    state: Annotated[str | None, typer.Option(help="Only reports in this state (default: all)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv (with a header) or jsonl")] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout")] = None,
    store: StoreOption = None,
) -> None:
    """Write every report (newest first) as CSV or JSON Lines."""
    from gateway.reports import export_reports

    if state is not None and state not in REPORT_STATES:
        _fail(f"--state must be one of {', '.join(REPORT_STATES)}")
    if fmt not in ("csv", "jsonl"):
        _fail("--format must be csv or jsonl")
    settings = settings_from(store=store)
    if (
        settings.store.startswith("sqlite:///")
        and not Path(settings.store.removeprefix("sqlite:///")).is_file()
    ):
        _fail(f"no store at {settings.store}")  # opening would create an empty one

    async def run(target: TextIO) -> int:
        opened = open_store(settings.store)
        await opened.open()
        try:
            return await export_reports(opened.reports, target, fmt, state)
        finally:
            await opened.close()

    if out is None:
        written = asyncio.run(run(sys.stdout))
    else:
        try:
            with out.open("w", encoding="utf-8", newline="") as target:
                written = asyncio.run(run(target))
        except OSError as exc:
            _fail(f"{out}: cannot write: {exc.strerror}")
    typer.echo(f"exported {written} reports", err=True)

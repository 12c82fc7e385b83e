"""``modgate incidents|users|complaints …``: the admin API's operations from a shell, straight
on the store (``--store`` or MODGATE_STORE), recorded with the operator as the actor.

Output is JSON on stdout. A record that is not there, or a change its state forbids, prints
``modgate: …`` on stderr and exits 1; bad options exit 2.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from gateway.admin import MAX_TEXT  # as the admin API: a note is a few paragraphs
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.duties import MIN_RETENTION_S, parse_duration
from gateway.privacy import Pseudonymizer, pseudonym_key
from gateway.records import Complaint, ComplaintStatus, Page, UserRecord
from gateway.settings import DEFAULT_STORE, Settings
from gateway.store.base import Store, open_store

__all__ = [
    "ActorOption",
    "AfterOption",
    "LimitOption",
    "NoteOption",
    "actor_name",
    "complaints_app",
    "emit",
    "emit_one",
    "emit_page",
    "fail",
    "gateway_config",
    "incidents_app",
    "settings_from",
    "text_value",
    "users_app",
    "with_store",
]

T = TypeVar("T")


incidents_app = typer.Typer(no_args_is_help=True, help="List, show and purge incidents.")
users_app = typer.Typer(
    no_args_is_help=True, help="A user's enforcement state, and reinstating (USER_ID as clients send it)."
)
complaints_app = typer.Typer(no_args_is_help=True, help="List, show and resolve complaints (Art. 15).")

StoreOption = Annotated[str | None, typer.Option("--store", help="Store URL [MODGATE_STORE]")]
ConfigOption = Annotated[
    Path | None, typer.Option(help="Gateway config YAML, for its pseudonym_secret [MODGATE_CONFIG]")
]
ActorOption = Annotated[str | None, typer.Option(help="Who did it, as recorded (default: cli:<login name>)")]
NoteOption = Annotated[str, typer.Option(help="Why, recorded with the change")]
LimitOption = Annotated[int, typer.Option(min=1, max=500)]
AfterOption = Annotated[str | None, typer.Option(help="Cursor: the last id of the previous page")]


def fail(message: str, code: int = 1) -> NoReturn:
    """``modgate: message`` on stderr, then exit ``code`` (1: the records say no; 2: bad usage)."""
    typer.echo(f"modgate: {message}", err=True)
    raise typer.Exit(code)


def settings_from(**overrides: Any) -> Settings:
    """Process settings from the flags given (None: not given) and ``MODGATE_*``; exit 2 when
    they are invalid, naming each bad one."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()]
        fail("invalid settings\n  " + "\n  ".join(lines), 2)


def _store_url(store: str | None) -> str:
    return store or os.environ.get("MODGATE_STORE") or DEFAULT_STORE


def with_store(url: str | None, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, run ``work`` on it, close it."""
    url = _store_url(url)
    try:
        opened = open_store(url)
    except ValueError as exc:
        fail(f"--store: {exc}", 2)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        fail(f"no store at {url}")  # opening would make an empty one and report nothing amiss

    async def run() -> T:
        await opened.open()
        try:
            if not await opened.ping():
                fail(f"the store at {opened.url} does not answer")
            return await work(opened)
        finally:
            await opened.close()

    return asyncio.run(run())


def emit(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def emit_page(
    url: str | None, fetch: Callable[[Store], Awaitable[Page[Any]]], body: Callable[[Any], Any]
) -> None:
    """One page of a list, as JSON: ``{"data": [...], "next": cursor}``."""

    async def work(s: Store) -> Any:
        page = await fetch(s)
        return {"data": [body(r) for r in page.data], "next": page.next}

    emit(with_store(url, work))


def emit_one(
    url: str | None, fetch: Callable[[Store], Awaitable[Any]], what: str, body: Callable[[Any], Any]
) -> None:
    """One record as JSON; exit 1 when there is none (``what`` names it in the message)."""
    found = with_store(url, fetch)
    if found is None:
        fail(f"no {what}")
    emit(body(found))


def actor_name(given: str | None) -> str:
    """``--actor``, or ``cli:<login name>`` of whoever runs the command."""
    if given is not None:
        if not given.strip() or len(given) > 200:
            fail("--actor must be a name of 1 to 200 characters", 2)
        return given.strip()
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # a uid without a passwd entry nor LOGNAME (containers)
        return "cli:unknown"


def text_value(option: str, value: str, *, required: bool = False) -> str:
    """A note or resolution, bounded as the admin API bounds it."""
    if len(value) > MAX_TEXT:
        fail(f"{option} must be at most {MAX_TEXT} characters", 2)
    if required and not value.strip():
        fail(f"{option} must not be empty", 2)
    return value


@incidents_app.command("list")
def incidents_list(store: StoreOption = None, limit: LimitOption = 20, after: AfterOption = None) -> None:
    """Newest incidents first, as JSON."""
    emit_page(store, lambda s: s.incidents.list(limit, after), lambda i: i.to_dict())


@incidents_app.command("show")
def incidents_show(incident_id: str, store: StoreOption = None) -> None:
    """One incident, as JSON."""
    emit_one(store, lambda s: s.incidents.get(incident_id), f"incident {incident_id}", lambda i: i.to_dict())


@incidents_app.command("purge")
def incidents_purge(
    older_than: Annotated[str, typer.Option(help="Age, e.g. 190d (at least 190d unless --force)")],
    store: StoreOption = None,
    force: Annotated[bool, typer.Option(help="Allow less than 190 days")] = False,
) -> None:
    """Delete incidents older than the given age (the law asks to keep them six months)."""
    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        fail(f"--older-than: {exc}", 2)
    if seconds < MIN_RETENTION_S and not force:
        fail("under 190 days; the law asks for at least six months (--force to override)", 2)
    deleted = with_store(store, lambda s: s.incidents.purge(time.time() - seconds))
    emit({"purged": deleted, "older_than_s": seconds})


# --- users -------------------------------------------------------------------------------------


def gateway_config(path: Path | None) -> GatewayConfig:
    """The gateway config at ``path`` (else ``MODGATE_CONFIG``, else the empty one); exit 2 when
    it is bad."""
    given = path or (Path(os.environ["MODGATE_CONFIG"]) if os.environ.get("MODGATE_CONFIG") else None)
    try:
        return load_config(given) if given is not None else GatewayConfig()
    except ConfigError as exc:
        fail(str(exc), 2)


def _user_work(
    config: Path | None, user_id: str, then: Callable[[Store, str], Awaitable[UserRecord | None]]
) -> Callable[[Store], Awaitable[tuple[str, UserRecord | None]]]:
    """Store work that pseudonymises ``user_id`` as the gateway does, then runs ``then``."""
    cfg = gateway_config(config)

    async def work(s: Store) -> tuple[str, UserRecord | None]:
        user = Pseudonymizer(await pseudonym_key(cfg, s))(user_id)
        return user, await then(s, user)

    return work


def _no_user(user: str) -> NoReturn:
    fail(
        f"no record of this user (pseudonym {user}); if the gateway's config sets pseudonym_secret, "
        "pass it with --config"
    )


@users_app.command("show")
def users_show(user_id: str, store: StoreOption = None, config: ConfigOption = None) -> None:
    """A user's enforcement status, strikes and history, as JSON."""
    user, record = with_store(store, _user_work(config, user_id, lambda s, u: s.users.get(u)))
    if record is None:
        _no_user(user)
    emit(record.to_dict())


@users_app.command("reinstate")
def users_reinstate(
    user_id: str,
    note: NoteOption = "",
    actor: ActorOption = None,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Back to ok with no strikes; recorded in the user's history."""
    text, who = text_value("--note", note), actor_name(actor)

    async def reinstate(s: Store, user: str) -> UserRecord | None:
        # A mistyped id (or the wrong pseudonym key) must not make a record of someone unknown.
        if await s.users.get(user, history=False) is None:
            return None
        return await s.users.reinstate(user, who, text)

    user, record = with_store(store, _user_work(config, user_id, reinstate))
    if record is None:
        _no_user(user)
    emit(record.to_dict())


# --- complaints --------------------------------------------------------------------------------

COMPLAINT_STATUSES: tuple[ComplaintStatus, ...] = ("open", "resolved")


def _complaint_body(complaint: Complaint) -> dict[str, Any]:
    """As the admin API shows it: with ``overdue`` when still open past its deadline."""
    return {**complaint.to_dict(), "overdue": complaint.overdue(time.time())}


@complaints_app.command("list")
def complaints_list(
    status: Annotated[str | None, typer.Option(help="open or resolved (default: both)")] = None,
    limit: LimitOption = 20,
    after: AfterOption = None,
    store: StoreOption = None,
) -> None:
    """Newest complaints first, as JSON."""
    if status is not None and status not in COMPLAINT_STATUSES:
        fail("--status must be open or resolved", 2)
    emit_page(store, lambda s: s.complaints.list(status, limit, after), _complaint_body)


@complaints_app.command("show")
def complaints_show(complaint_id: str, store: StoreOption = None) -> None:
    """One complaint, as JSON."""
    emit_one(store, lambda s: s.complaints.get(complaint_id), f"complaint {complaint_id}", _complaint_body)


@complaints_app.command("resolve")
def complaints_resolve(
    complaint_id: str,
    resolution: Annotated[str, typer.Option(help="What was done, recorded with the complaint")],
    actor: ActorOption = None,
    store: StoreOption = None,
) -> None:
    """Resolve an open complaint."""
    text, who = text_value("--resolution", resolution, required=True), actor_name(actor)

    try:
        done = with_store(store, lambda s: s.complaints.resolve(complaint_id, who, text))
    except KeyError:
        fail(f"no complaint {complaint_id}")
    except ValueError as exc:  # already resolved
        fail(str(exc))
    emit(_complaint_body(done))

"""``modgate incidents|users|complaints …``: the admin API's operations from a shell, straight
on the store (``--store`` or MODGATE_STORE), recorded with the operator as the actor."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from gateway.duties import MIN_RETENTION_S, parse_duration
from gateway.settings import DEFAULT_STORE
from gateway.store.base import Store, open_store

__all__ = ["incidents_app", "with_store"]

T = TypeVar("T")

incidents_app = typer.Typer(no_args_is_help=True, help="List, show and purge incidents.")

StoreOption = Annotated[str | None, typer.Option("--store", help="Store URL [MODGATE_STORE]")]


def _store_url(store: str | None) -> str:
    return store or os.environ.get("MODGATE_STORE") or DEFAULT_STORE


def with_store(url: str | None, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store, run ``work`` on it, close it."""

    async def run() -> T:
        opened = open_store(_store_url(url))
        await opened.open()
        try:
            if not await opened.ping():
                typer.echo(f"modgate: the store at {opened.url} does not answer", err=True)
                raise typer.Exit(1)
            return await work(opened)
        finally:
            await opened.close()

    return asyncio.run(run())


def emit(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


@incidents_app.command("list")
def incidents_list(
    store: StoreOption = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    after: Annotated[str | None, typer.Option(help="Cursor: the last id of the previous page")] = None,
) -> None:
    """Newest incidents first, as JSON."""

    async def work(s: Store) -> Any:
        page = await s.incidents.list(limit, after)
        return {"data": [i.to_dict() for i in page.data], "next": page.next}

    emit(with_store(store, work))


@incidents_app.command("show")
def incidents_show(incident_id: str, store: StoreOption = None) -> None:
    """One incident, as JSON."""
    found = with_store(store, lambda s: s.incidents.get(incident_id))
    if found is None:
        typer.echo(f"modgate: no incident {incident_id}", err=True)
        raise typer.Exit(1)
    emit(found.to_dict())


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
        typer.echo(f"modgate: --older-than: {exc}", err=True)
        raise typer.Exit(2) from None
    if seconds < MIN_RETENTION_S and not force:
        typer.echo(
            "modgate: under 190 days; the law asks for at least six months (--force to override)", err=True
        )
        raise typer.Exit(2)
    deleted = with_store(store, lambda s: s.incidents.purge(time.time() - seconds))
    emit({"purged": deleted, "older_than_s": seconds})

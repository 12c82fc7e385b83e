"""``modgate reports|users|complaints …`` straight on a real store: a SQLite file, and Redis.

The commands run in-process through typer's CliRunner; the records are written and read back
through the store itself.
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from gateway.cli import app
from gateway.privacy import Pseudonymizer
from gateway.records import Complaint, Report, UserRecord
from gateway.store.base import Store
from tests.support.report_stores import report
from tests.support.whole_stores import on_store, redis_db10

SECRET = "cli-pseudonym-secret-0123456789"
LOGIN: dict[str, str | None] = {"LOGNAME": "kim", "MODGATE_STORE": None, "MODGATE_CONFIG": None}


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/records.db"
        on_store(url, lambda s: s.ping())  # made here: the commands refuse a store that is not there
        yield url
        return
    with redis_db10() as url:
        yield url


def cli(*args: str, **env: str) -> Result:
    return CliRunner().invoke(app, list(args), env={**LOGIN, **env})


def out(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert message in result.stderr and result.stdout == ""


# --- reports -----------------------------------------------------------------------------------


def seed_reports(url: str, n: int) -> list[Report]:
    made = [report(i) for i in range(n)]

    async def work(s: Store) -> None:
        for one in made:
            await s.reports.enqueue(one)

    on_store(url, work)
    return made


def test_reports_list_pages_newest_first_and_by_state(store_url: str) -> None:
    made = seed_reports(store_url, 3)
    first = out(cli("reports", "list", "--store", store_url, "--limit", "2"))
    assert [r["id"] for r in first["data"]] == [made[2].id, made[1].id]
    rest = out(cli("reports", "list", "--store", store_url, "--after", first["next"]))
    assert [r["id"] for r in rest["data"]] == [made[0].id] and rest["next"] is None
    assert out(cli("reports", "list", "--state", "confirmed", "--store", store_url))["data"] == []
    queued = out(cli("reports", "list", "--state", "queued", MODGATE_STORE=store_url))
    assert len(queued["data"]) == 3
    refused(cli("reports", "list", "--state", "lost", "--store", store_url), 2, "--state must be one of")
    assert cli("reports", "list", "--limit", "0", "--store", store_url).exit_code == 2


def test_reports_show(store_url: str) -> None:
    made = seed_reports(store_url, 1)[0]
    assert out(cli("reports", "show", made.id, "--store", store_url)) == made.to_dict()
    refused(cli("reports", "show", "rpt_nope", "--store", store_url), 1, "modgate: no report rpt_nope")


def test_reports_lifecycle_records_who_and_why_and_queues_each_change(store_url: str) -> None:
    one, two = seed_reports(store_url, 2)
    confirmed = out(cli("reports", "confirm", one.id, "--note", "clear case", "--store", store_url))
    assert confirmed["state"] == "confirmed"
    step = confirmed["history"][-1]
    assert (step["from_state"], step["to_state"], step["actor"], step["note"]) == (
        "queued", "confirmed", "cli:kim", "clear case",
    )  # fmt: skip
    filed = out(cli("reports", "file", one.id, "--actor", "officer-li", "--store", store_url))
    assert filed["state"] == "filed" and filed["history"][-1]["actor"] == "officer-li"
    dismissed = out(cli("reports", "dismiss", two.id, "--store", store_url))
    assert dismissed["state"] == "dismissed" and dismissed["history"][-1]["note"] == ""

    async def check(s: Store) -> tuple[Report | None, dict[str, int]]:
        return await s.reports.get(one.id), await s.reports.outbox()

    stored, outbox = on_store(store_url, check)
    assert stored is not None and stored.to_dict() == filed
    assert outbox == {"pending": 5, "dead": 0}  # two queued, confirmed, filed, dismissed


@pytest.mark.parametrize(
    ("step", "state_before"),
    [("file", "queued"), ("dismiss", "confirmed"), ("confirm", "dismissed"), ("confirm", "filed")],
)
def test_reports_steps_the_lifecycle_forbids(store_url: str, step: str, state_before: str) -> None:
    made = seed_reports(store_url, 1)[0]
    path = {"queued": [], "confirmed": ["confirm"], "dismissed": ["dismiss"], "filed": ["confirm", "file"]}
    for earlier in path[state_before]:
        out(cli("reports", earlier, made.id, "--store", store_url))
    refused(cli("reports", step, made.id, "--store", store_url), 1, f"is {state_before}; it cannot become")
    assert on_store(store_url, lambda s: s.reports.get(made.id)).state == state_before  # type: ignore[union-attr]


def test_reports_step_refusals(store_url: str) -> None:
    made = seed_reports(store_url, 1)[0]
    refused(cli("reports", "confirm", "rpt_nope", "--store", store_url), 1, "modgate: no report rpt_nope")
    refused(cli("reports", "confirm", made.id, "--actor", " ", "--store", store_url), 2, "--actor")
    refused(cli("reports", "confirm", made.id, "--note", "x" * 4001, "--store", store_url), 2, "--note")
    assert on_store(store_url, lambda s: s.reports.get(made.id)).state == "queued"  # type: ignore[union-attr]


def test_default_actor_is_the_login_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/records.db"
    made = seed_reports(url, 1)[0]
    env = {"MODGATE_STORE": url, "MODGATE_CONFIG": None}
    result = CliRunner().invoke(app, ["reports", "confirm", made.id], env=env)
    assert out(result)["history"][-1]["actor"] == f"cli:{getpass.getuser()}"


# --- users -------------------------------------------------------------------------------------


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(f'pseudonym_secret: "{SECRET}"\n', encoding="utf-8")
    return path


def suspend(url: str, user: str) -> None:
    async def work(s: Store) -> None:
        now = time.time()
        for i in range(3):
            await s.users.strike(user, now + i, 86400, detail=f"incident inc_{i}")
        await s.users.set_status(user, "suspended", now + 7 * 86400, "gateway", "3 strikes", at=now + 3)

    on_store(url, work)


def test_users_show_pseudonymises_with_the_configs_secret(store_url: str, tmp_path: Path) -> None:
    pseudonym = Pseudonymizer(SECRET)("alice@example.com")
    suspend(store_url, pseudonym)
    config = str(config_file(tmp_path))
    shown = out(cli("users", "show", "alice@example.com", "--config", config, "--store", store_url))
    assert shown["user"] == pseudonym and shown["status"] == "suspended" and len(shown["strikes"]) == 3
    assert "alice@example.com" not in json.dumps(shown)
    by_env = cli("users", "show", "alice@example.com", "--store", store_url, MODGATE_CONFIG=config)
    assert out(by_env) == shown
    # Without the config, the store's own secret keys another pseudonym: not this user.
    refused(cli("users", "show", "alice@example.com", "--store", store_url), 1, "pass it with --config")


def test_users_show_pseudonymises_with_the_stores_secret(store_url: str) -> None:
    key = on_store(store_url, lambda s: s.secret("pseudonym"))
    suspend(store_url, Pseudonymizer(key)("bob"))
    shown = out(cli("users", "show", "bob", "--store", store_url))
    assert shown["user"] == Pseudonymizer(key)("bob") and shown["status"] == "suspended"
    refused(cli("users", "show", "carol", "--store", store_url), 1, Pseudonymizer(key)("carol"))


def test_users_reinstate_clears_and_records(store_url: str, tmp_path: Path) -> None:
    pseudonym = Pseudonymizer(SECRET)("alice@example.com")
    suspend(store_url, pseudonym)
    config = str(config_file(tmp_path))
    args = ["--note", "appeal upheld", "--config", config, "--store", store_url]
    done = out(cli("users", "reinstate", "alice@example.com", *args))
    assert (done["status"], done["until"], done["strikes"]) == ("ok", None, [])
    last = done["history"][-1]
    assert (last["kind"], last["actor"], last["detail"]) == ("reinstate", "cli:kim", "appeal upheld")
    stored = on_store(store_url, lambda s: s.users.get(pseudonym))
    assert isinstance(stored, UserRecord) and stored.to_dict() == done


def test_users_reinstate_refuses_an_unknown_user(store_url: str, tmp_path: Path) -> None:
    config = str(config_file(tmp_path))
    result = cli("users", "reinstate", "nobody", "--config", config, "--store", store_url)
    refused(result, 1, "no record of this user")
    assert on_store(store_url, lambda s: s.users.get(Pseudonymizer(SECRET)("nobody"))) is None


def test_users_bad_config_is_a_usage_error(store_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pseudonym_secrets: x\n", encoding="utf-8")
    refused(cli("users", "show", "bob", "--config", str(bad), "--store", store_url), 2, "pseudonym_secrets")


# --- complaints --------------------------------------------------------------------------------


def seed_complaints(url: str, n: int) -> list[Complaint]:
    made = [
        Complaint(
            id=f"cmp_{i:04d}",
            created_at=1_700_000_000.0 + i,
            text=f"投诉 {i}",
            due_at=1_700_600_000.0 + i,
            incident_id=f"inc_{i:04d}",
            contact="c***@example.com",
        )
        for i in range(n)
    ]

    async def work(s: Store) -> None:
        for one in made:
            await s.complaints.create(one)

    on_store(url, work)
    return made


def test_complaints_list_and_show(store_url: str) -> None:
    made = seed_complaints(store_url, 3)
    first = out(cli("complaints", "list", "--limit", "2", "--store", store_url))
    assert [c["id"] for c in first["data"]] == ["cmp_0002", "cmp_0001"]
    rest = out(cli("complaints", "list", "--after", first["next"], "--store", store_url))
    assert [c["id"] for c in rest["data"]] == ["cmp_0000"] and rest["next"] is None
    assert out(cli("complaints", "list", "--status", "resolved", "--store", store_url))["data"] == []
    refused(cli("complaints", "list", "--status", "closed", "--store", store_url), 2, "--status")
    # Due in 2023 and still open: overdue.
    assert out(cli("complaints", "show", "cmp_0001", "--store", store_url)) == {
        **made[1].to_dict(),
        "overdue": True,
    }
    assert [c["overdue"] for c in first["data"]] == [True, True]
    refused(cli("complaints", "show", "cmp_nope", "--store", store_url), 1, "modgate: no complaint cmp_nope")


def test_complaints_resolve(store_url: str) -> None:
    seed_complaints(store_url, 2)
    done = out(
        cli("complaints", "resolve", "cmp_0000", "--resolution", "content removed", "--store", store_url)
    )
    assert (done["status"], done["resolved_by"], done["resolution"]) == (
        "resolved",
        "cli:kim",
        "content removed",
    )
    assert done["resolved_at"] is not None and done["overdue"] is False
    resolved = out(cli("complaints", "list", "--status", "resolved", "--store", store_url))
    assert [c["id"] for c in resolved["data"]] == ["cmp_0000"]
    still_open = out(cli("complaints", "list", "--status", "open", "--store", store_url))
    assert [c["id"] for c in still_open["data"]] == ["cmp_0001"]
    again = cli("complaints", "resolve", "cmp_0000", "--resolution", "again", "--store", store_url)
    refused(again, 1, "already resolved")
    unknown = cli("complaints", "resolve", "cmp_nope", "--resolution", "x", "--store", store_url)
    refused(unknown, 1, "modgate: no complaint cmp_nope")
    assert cli("complaints", "resolve", "cmp_0001", "--store", store_url).exit_code == 2  # no --resolution
    refused(cli("complaints", "resolve", "cmp_0001", "--resolution", " ", "--store", store_url), 2, "empty")
    stored = on_store(store_url, lambda s: s.complaints.get("cmp_0001"))
    assert stored is not None and stored.status == "open"


# --- the store itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["reports", "list"], ["users", "show", "bob"], ["complaints", "list"], ["incidents", "list"]],
)
def test_a_missing_store_file_is_not_made(tmp_path: Path, args: list[str]) -> None:
    url = f"sqlite:///{tmp_path}/typo.db"
    refused(cli(*args, "--store", url), 1, f"no store at {url}")
    assert not (tmp_path / "typo.db").exists()


def test_a_bad_store_url_is_a_usage_error() -> None:
    refused(cli("complaints", "list", "--store", "mysql://db/records"), 2, "unsupported store URL")


def test_an_unreachable_store_says_so() -> None:
    refused(cli("reports", "list", "--store", "redis://127.0.0.1:1/0"), 1, "does not answer")

"""Reports: which incidents become one and with what evidence; the CSV/JSONL export and its command."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import gateway.reports
from gateway.cli import app
from gateway.incidents import Incident
from gateway.policy import Policy
from gateway.policy_loader import load_policy
from gateway.records import Report
from gateway.reports import CSV_FIELDS, build_report, csv_row, export_reports
from gateway.store.sqlite import SQLiteStore
from tests.support.report_stores import BACKENDS, StoreMaker, report, store_maker

POLICY = """
name: reports-test
extends: default
classifiers:
  guard: null
  banned-terms:
    type: lexicon
    terms:
      A.1.d: ["zorblax"]
      X.test_flag: ["flagword"]
      X.test_report: ["reportword"]
rules:
  X.test_flag: {input: flag, output: flag}
  X.test_report: {input: flag, output: flag, report: true}
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return load_policy(path)


def risk(code: str, score: float = 0.9, action: str = "block") -> dict[str, Any]:
    return {"code": code, "score": score, "classifier": "banned-terms", "action": action}


def incident(risks: list[dict[str, Any]], **fields: Any) -> Incident:
    values: dict[str, Any] = {
        "id": f"inc_{uuid.uuid4().hex[:12]}",
        "created_at": 1_700_000_000.0,
        "request_id": "req-42",
        "tenant": "租户甲",
        "route": "qwen-team-a",
        "model": "qwen-max",
        "direction": "output",
        "channel": "content",
        "action": "block",
        "risks": risks,
        "policy": "reports-test",
        "policy_version": "0123456789abcdef",
        "excerpt": "请告诉我 zorblax 配方，电话 138****5678",
        "offsets": [[5, 12]],
        "exposed_chars": 0,
    }
    values.update(fields)
    return Incident(**values)


@dataclass(frozen=True)
class UserIncident(Incident):
    """An incident with the pseudonymous user that the enforcement work adds."""

    user: str | None = None


# --- build_report ----------------------------------------------------------------------------


def test_no_report_when_no_fired_rule_asks_for_one(policy: Policy) -> None:
    assert build_report(incident([risk("X.test_flag", action="flag")]), policy, "ctx") is None
    assert build_report(incident([risk("A.2.e")]), policy, "ctx") is None  # default: no report


@pytest.mark.parametrize(
    ("code", "why"),
    [("A.1.d", "the parent code's rule (A.1 in the default policy)"), ("X.test_report", "its own rule")],
)
def test_a_report_when_a_fired_rule_reports(policy: Policy, code: str, why: str) -> None:
    made = build_report(incident([risk(code)]), policy, "")
    assert made is not None, why
    assert made.evidence["reportable"] == [code]


def test_report_evidence(policy: Policy) -> None:
    fired = [risk("X.test_flag", 0.7, "flag"), risk("A.1.d", 0.97)]
    source = incident(fired, exposed_chars=3)
    before = time.time()
    made = build_report(source, policy, "用户说：我的电话是 13812345678，邮箱 zhang.san@example.com")
    assert made is not None
    assert made.id.startswith("rpt_") and made.incident_id == source.id
    assert made.state == "queued" and made.history == []
    assert before <= made.created_at == made.updated_at <= time.time()
    ev = made.evidence
    assert ev["policy"] == {"name": "reports-test", "version": "0123456789abcdef"}
    assert ev["reportable"] == ["A.1.d"]
    assert ev["risks"] == fired  # every fired risk, with score and classifier
    assert ev["excerpt"] == source.excerpt and ev["offsets"] == [[5, 12]]
    assert "13812345678" not in ev["context"] and "138****5678" in ev["context"]
    assert "zhang.san@" not in ev["context"]
    expected = {
        "request_id": "req-42",
        "route": "qwen-team-a",
        "model": "qwen-max",
        "direction": "output",
        "channel": "content",
        "tenant": "租户甲",
        "action": "block",
        "exposed_chars": 3,
        "user": None,
        "incident_created_at": 1_700_000_000.0,
    }
    assert {k: ev[k] for k in expected} == expected
    assert Report.from_dict(json.loads(json.dumps(made.to_dict()))) == made


def test_report_carries_the_user_pseudonym(policy: Policy) -> None:
    base = incident([risk("A.1.d")])
    with_user = UserIncident(**{**base.to_dict(), "user": "u_0123456789abcdef0123456789abcdef"})
    made = build_report(with_user, policy, "")
    assert made is not None and made.evidence["user"] == "u_0123456789abcdef0123456789abcdef"


def test_report_ids_differ(policy: Policy) -> None:
    source = incident([risk("A.1.d")])
    made = [build_report(source, policy, "") for _ in range(20)]
    assert len({r.id for r in made if r is not None}) == 20


# --- CSV rows --------------------------------------------------------------------------------


def test_csv_row_flattens_and_defuses_formulas() -> None:
    one = report(1, created_at=0.0, updated_at=0.0)
    one = one.moved("confirmed", "alice", 86_400.0, '=HYPERLINK("http://x")')
    one = Report.from_dict({**one.to_dict(), "evidence": {**one.evidence, "excerpt": "+cmd|' /C calc'!A0"}})
    row = csv_row(one)
    assert tuple(row) == CSV_FIELDS
    assert (row["id"], row["state"], row["incident_id"]) == (one.id, "confirmed", "inc_0001")
    assert row["created_at"] == "1970-01-01T00:00:00+00:00"
    assert (row["policy"], row["policy_version"]) == ("default", "0123456789abcdef")
    assert (row["risk_codes"], row["max_score"]) == ("A.1.d", "0.97")
    assert (row["last_actor"], row["last_at"]) == ("alice", "1970-01-02T00:00:00+00:00")
    assert row["last_note"] == '\'=HYPERLINK("http://x")'
    assert row["excerpt"] == "'+cmd|' /C calc'!A0"
    assert row["user"] == "" and row["context"] == ""


# --- export, both backends -------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreMaker]:
    async with store_maker(request.param, tmp_path) as maker:
        yield maker


async def fill(store: Any, n: int) -> list[Report]:
    made = [report(i) for i in range(n)]
    for one in made:
        await store.reports.enqueue(one)
    return made


async def test_export_csv_and_jsonl(make_store: StoreMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.reports, "EXPORT_PAGE", 2)  # several pages from a few reports
    store = make_store()
    await store.open()
    try:
        made = await fill(store, 5)
        for one in made[:3]:
            await store.reports.transition(one.id, "confirmed", "alice", "证据充分")
        out = io.StringIO()
        assert await export_reports(store.reports, out, "csv", "confirmed") == 3
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert [r["id"] for r in rows] == [made[2].id, made[1].id, made[0].id]
        assert all(r["state"] == "confirmed" and r["last_note"] == "证据充分" for r in rows)
        assert rows[0]["excerpt"] == made[2].evidence["excerpt"]

        out = io.StringIO()
        assert await export_reports(store.reports, out, "jsonl") == 5
        exported = [Report.from_dict(json.loads(line)) for line in out.getvalue().splitlines()]
        assert exported == [await store.reports.get(r.id) for r in made[::-1]]

        empty = io.StringIO()
        assert await export_reports(store.reports, empty, "csv", "filed") == 0
        assert empty.getvalue().strip() == ",".join(CSV_FIELDS)
        with pytest.raises(ValueError, match="xml"):
            await export_reports(store.reports, io.StringIO(), "xml")
    finally:
        await store.close()


# --- the command -----------------------------------------------------------------------------


def sqlite_with_reports(path: Path) -> list[Report]:
    async def make() -> list[Report]:
        store = SQLiteStore(f"sqlite:///{path}")
        await store.open()
        try:
            made = await fill(store, 3)
            await store.reports.transition(made[1].id, "confirmed", "alice")
            return made
        finally:
            await store.close()

    return asyncio.run(make())


def test_export_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODGATE_STORE", raising=False)
    made = sqlite_with_reports(tmp_path / "m.db")
    url = f"sqlite:///{tmp_path}/m.db"
    runner = CliRunner()
    result = runner.invoke(app, ["reports", "export", "--store", url])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["id"] for x in lines] == [r.id for r in made[::-1]]
    assert "exported 3 reports" in result.stderr

    out = tmp_path / "confirmed.csv"
    args = ["reports", "export", "--state", "confirmed", "--format", "csv", "--out", str(out)]
    result = runner.invoke(app, args, env={"MODGATE_STORE": url})
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8", newline="") as written:
        rows = list(csv.DictReader(written))
    assert [(r["id"], r["state"], r["last_actor"]) for r in rows] == [(made[1].id, "confirmed", "alice")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--state", "pending"], "--state must be one of"),
        (["--format", "xml"], "--format must be csv or jsonl"),
        (["--store", "sqlite:///{tmp}/missing.db"], "no store at"),
        (["--store", "mysql://db"], "store"),
    ],
)
def test_export_command_refuses(tmp_path: Path, args: list[str], message: str) -> None:
    sqlite_with_reports(tmp_path / "m.db")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--store" not in args:
        args += ["--store", f"sqlite:///{tmp_path}/m.db"]
    result = CliRunner().invoke(app, ["reports", "export", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "missing.db").exists()

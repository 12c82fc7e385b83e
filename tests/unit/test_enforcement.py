"""gateway.enforcement: who the user is, where they stand, and the ladder over a real store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from gateway.duties import EnforcementSettings
from gateway.enforcement import (
    FALLBACK_RATE,
    NOTICE_HEADER,
    STATUS_HEADER,
    Enforcer,
    Standing,
    identify,
    standing,
)
from gateway.errors import UserRestricted, UserSuspended
from gateway.metrics import Metrics
from gateway.records import UserRecord
from gateway.store.base import Store, open_store

NOW = 1_700_000_000.0
LADDER = EnforcementSettings.model_validate(
    {
        "window": "1h",
        "ladder": [
            {"strikes": 1, "action": "warn"},
            {"strikes": 3, "action": "restrict", "rate": "10/min"},
            {"strikes": 4, "action": "restrict", "rate": "2/min"},
            {"strikes": 5, "action": "suspend", "for": "7d"},
        ],
        "warning": "注意 — mind the policy; 100% serious",
    }
)


def record(strikes: int, status: str = "ok", until: float | None = None, age: float = 10) -> UserRecord:
    return UserRecord("u_x", status, until, [NOW - age] * strikes)  # type: ignore[arg-type]


def test_identify_takes_body_then_header_then_key() -> None:
    assert identify("body", "header", "key") == "body"
    assert identify(None, "header", "key") == "header"
    assert identify("", "  ", "key") == "key"
    assert identify(None, None, None) is None
    assert identify(" ", "", None) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, Standing()),
        (record(0), Standing()),
        (record(1), Standing("warned")),
        (record(2, "warned"), Standing("warned")),
        (record(3), Standing("restricted", None, (10, 60.0))),
        (record(4, "restricted"), Standing("restricted", None, (2, 60.0))),
        (record(6, "suspended", NOW + 5), Standing("suspended", NOW + 5)),
        (record(0, "suspended"), Standing("suspended")),  # no end: until reinstated
        (record(1, "restricted", NOW + 5), Standing("restricted", NOW + 5, (10, 60.0))),
        # A suspension that ended falls back to the strongest lower step the strikes reach.
        (record(5, "suspended", NOW - 1), Standing("restricted", None, (2, 60.0))),
        (record(4, "restricted", NOW - 1), Standing("warned")),
        (record(0, "suspended", NOW - 1), Standing()),
        # Strikes older than the window do not count.
        (record(5, age=3601), Standing()),
        (record(2, "warned", age=3601), Standing()),
    ],
)
def test_standing(given: UserRecord | None, expected: Standing) -> None:
    assert standing(given, LADDER, NOW) == expected


def test_restricted_without_a_restrict_step_uses_the_fallback_rate() -> None:
    settings = EnforcementSettings.model_validate({"ladder": [{"strikes": 2, "action": "suspend"}]})
    assert standing(record(0, "restricted"), settings, NOW).rate == FALLBACK_RATE


def test_notice_is_ascii_and_reads_back() -> None:
    headers = Standing("warned").notice(LADDER)
    assert headers[NOTICE_HEADER].isascii()
    assert unquote(headers[NOTICE_HEADER]) == LADDER.warning
    assert headers[STATUS_HEADER] == "warned"
    assert Standing("restricted").notice(LADDER)[STATUS_HEADER] == "restricted"
    assert Standing().notice(LADDER) == {}
    assert Standing("suspended").notice(LADDER) == {}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path}/e.db")
    await opened.open()
    yield opened
    await opened.close()


async def test_strikes_climb_the_ladder(store: Store) -> None:
    metrics = Metrics()
    enforcer = Enforcer(store.users, metrics)
    seen = [await enforcer.strike("u_1", LADDER, f"inc_{n}") for n in range(1, 7)]
    statuses = [s.status for s in seen if s is not None]
    assert statuses == ["warned", "warned", "restricted", "restricted", "suspended", "suspended"]
    assert seen[3] is not None and seen[3].rate == (2, 60.0)
    final = await store.users.get("u_1")
    assert final is not None and final.until is not None
    assert final.until == pytest.approx(time.time() + 7 * 86400, abs=5)
    changes = [(e.status, e.detail) for e in final.history if e.kind == "status"]
    assert changes == [
        ("warned", "1 strikes; incident inc_1"),
        ("restricted", "3 strikes; incident inc_3"),
        ("suspended", "5 strikes; incident inc_5"),
    ]  # the second restrict step changes the rate, not the status
    with pytest.raises(UserSuspended) as info:
        await enforcer.check("u_1", LADDER)
    assert info.value.status == 403 and info.value.code == "user_suspended"
    assert info.value.modgate == {"user_status": "suspended", "until": final.until}
    counts = {
        action: metrics.registry.get_sample_value("modgate_enforcement_actions_total", {"action": action})
        for action in ("warn", "restrict", "suspend", "rejected_suspended", "rejected_restricted")
    }
    assert counts == {
        "warn": 1,
        "restrict": 1,
        "suspend": 1,
        "rejected_suspended": 1,
        "rejected_restricted": None,
    }


async def test_concurrent_strikes_end_at_the_top_step(store: Store) -> None:
    enforcer = Enforcer(store.users, Metrics())
    await asyncio.gather(*(enforcer.strike("u_2", LADDER, f"inc_{n}") for n in range(8)))
    final = await store.users.get("u_2")
    assert final is not None and final.status == "suspended" and len(final.strikes) == 8


async def test_restricted_check_counts_requests(store: Store) -> None:
    enforcer = Enforcer(store.users, Metrics())
    for n in range(4):
        await enforcer.strike("u_3", LADDER, f"inc_{n}")
    assert (await enforcer.check("u_3", LADDER)).status == "restricted"
    assert (await enforcer.check("u_3", LADDER)).status == "restricted"
    with pytest.raises(UserRestricted) as info:
        await enforcer.check("u_3", LADDER)
    assert info.value.status == 429 and info.value.code == "user_restricted"
    assert unquote(info.value.headers[NOTICE_HEADER]) == LADDER.warning


async def test_a_closed_store_never_fails_the_request(tmp_path: Path) -> None:
    metrics = Metrics()
    closed = open_store(f"sqlite:///{tmp_path}/closed.db")
    enforcer = Enforcer(closed.users, metrics)
    assert await enforcer.check("u_4", LADDER) == Standing()
    assert await enforcer.strike("u_4", LADDER, "inc_1") is None
    for operation in ("user_check", "strike"):
        assert metrics.registry.get_sample_value("modgate_store_errors_total", {"operation": operation}) == 1
    await closed.close()

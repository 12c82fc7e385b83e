"""The spool: records kept on local disk while the store is down, replayed exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.spool import Spool


class Sink:
    """Stands in for the store at the replay boundary; fails on chosen calls."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.calls = 0
        self.fail_at = fail_at

    async def __call__(self, kind: str, record: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise ConnectionError("store down again")
        self.got.append((kind, record))


async def test_append_then_replay_empties_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    assert spool.pending() == 0
    for n in range(3):
        await spool.append(("incident", {"id": f"inc_{n}", "excerpt": "炸药配方"}))
    assert spool.pending() == 3
    sink = Sink()
    assert await spool.replay(sink) == 3
    assert [r["id"] for _, r in sink.got] == ["inc_0", "inc_1", "inc_2"]
    assert sink.got[0] == ("incident", {"id": "inc_0", "excerpt": "炸药配方"})
    assert spool.pending() == 0
    assert await spool.replay(Sink()) == 0


async def test_a_failed_replay_keeps_the_rest_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for n in range(4):
        await spool.append(("incident", {"id": f"inc_{n}"}))
    assert await spool.replay(Sink(fail_at=3)) == 2
    assert spool.pending() == 2
    await spool.append(("incident", {"id": "inc_4"}))  # arrives while the store is still down
    assert spool.pending() == 3
    sink = Sink()
    assert await spool.replay(sink) == 3
    assert [r["id"] for _, r in sink.got] == ["inc_2", "inc_3", "inc_4"]
    assert spool.pending() == 0


async def test_a_replay_cut_short_by_a_crash_is_taken_up_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    await spool.append(("incident", {"id": "inc_0"}))
    spool._take()  # the process died right after moving the spool aside
    await spool.append(("incident", {"id": "inc_1"}))
    sink = Sink()
    assert await Spool(tmp_path).replay(sink) == 2
    assert [r["id"] for _, r in sink.got] == ["inc_0", "inc_1"]


async def test_a_torn_last_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    await spool.append(("incident", {"id": "inc_0"}))
    with spool.path.open("ab") as f:
        f.write(b'{"kind": "incident", "rec')  # power cut mid-append
    sink = Sink()
    assert await spool.replay(sink) == 1
    assert sink.got == [("incident", {"id": "inc_0"})]


async def test_records_appended_together_replay_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    await spool.append(("incident", {"id": "inc_0"}), ("report", {"id": "rpt_0", "incident_id": "inc_0"}))
    assert spool.pending() == 2
    sink = Sink()
    assert await spool.replay(sink) == 2
    assert [kind for kind, _ in sink.got] == ["incident", "report"]

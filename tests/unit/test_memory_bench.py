"""The memory benchmark's pure parts: reading /proc status and building its texts."""

from __future__ import annotations

import os

import pytest

from benchmarks.memory import memory_kb, parse_status, texts

STATUS = "Name:\tpython\nVmPeak:\t 4000 kB\nVmHWM:\t 1082540 kB\nVmRSS:\t  735772 kB\nThreads:\t9\n"


def test_status_gives_rss_and_peak_in_kb() -> None:
    assert parse_status(STATUS) == {"VmRSS": 735772, "VmHWM": 1082540}


@pytest.mark.parametrize("bad", ["Name:\tpython\n", STATUS.replace("735772 kB", "735772 MB")])
def test_status_without_the_fields_or_with_another_unit_is_an_error(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_status(bad)


def test_this_process_has_a_peak_at_least_its_rss() -> None:
    mem = memory_kb(os.getpid())
    assert 0 < mem["VmRSS"] <= mem["VmHWM"]


def test_texts_are_one_english_and_one_chinese_of_the_asked_length() -> None:
    en, zh = texts(1500)
    assert len(en) == len(zh) == 1500
    assert en.isascii() and not zh.isascii()

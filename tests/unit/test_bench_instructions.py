"""The instruction-count harness's arithmetic: start-up and set-up cancel out."""

from __future__ import annotations

import pytest

from bench.instructions import InstructionsError, PerEvent, collected, per_event, report


def test_the_total_is_read_from_callgrinds_last_line() -> None:
    stderr = ("==123== Callgrind, a call-graph generating cache profiler\n"
              "==123== Events    : Ir\n==123== Collected : 487663890\n==123==\n")
    assert collected(stderr) == 487_663_890


def test_a_run_without_a_count_is_an_error() -> None:
    with pytest.raises(InstructionsError, match="no instruction count"):
        collected("valgrind: failed to start tool 'callgrind'\n")


def test_per_event_cancels_start_up_and_message_building() -> None:
    small = 1000
    start_up, build, decode, pipeline = 300_000_000, 200_000, 100_000, 130_000

    def total(per_event_work: int, events: int) -> int:
        return start_up + (build + per_event_work) * events

    counts = {}
    for events in (small, 3 * small):
        counts[("setup", events)] = total(0, events)
        counts[("decode", events)] = total(decode, events)
        counts[("memory", events)] = total(pipeline, events)
        counts[("sqlite", events)] = total(pipeline + 1_000, events)
    figures = per_event(counts, small)
    assert figures.decode == decode
    assert figures.pipeline == {"memory": pipeline, "sqlite": pipeline + 1_000}
    assert figures.own("memory") == pipeline - decode


def test_the_report_shows_the_change_of_own_work_against_a_revision() -> None:
    now = PerEvent(decode=100_000, pipeline={"memory": 130_000, "sqlite": 131_000})
    then = PerEvent(decode=100_000, pipeline={"memory": 133_000, "sqlite": 131_000})
    text = report([("working tree", now), ("HEAD~1", then)], 2000)
    assert "own work, memory: -3,000 instructions per event (-9.1%)" in text
    assert "own work, sqlite: +0 instructions per event (+0.0%)" in text

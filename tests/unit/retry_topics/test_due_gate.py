"""The due gate (process now or pause for N ms) and the injectable clocks."""

from __future__ import annotations

import time

import pytest

from retry_topics.clock import Clock, ManualClock, SystemClock
from retry_topics.due_gate import Ready, Wait, due_gate


def test_no_due_time_is_ready() -> None:
    assert due_gate(None, 1_000) == Ready()


@pytest.mark.parametrize("due_at_ms", [0, 999, 1_000])
def test_due_or_overdue_is_ready(due_at_ms: int) -> None:
    assert due_gate(due_at_ms, 1_000) == Ready()


def test_not_yet_due_waits_exactly_until_due() -> None:
    assert due_gate(1_001, 1_000) == Wait(1)
    assert due_gate(31_000, 1_000) == Wait(30_000)


def test_max_wait_bounds_a_far_future_due_time() -> None:
    assert due_gate(10_000_000, 0, max_wait_ms=30_000) == Wait(30_000)
    assert due_gate(10_000, 0, max_wait_ms=30_000) == Wait(10_000)
    assert due_gate(10_000, 0, max_wait_ms=0) == Ready()


def test_wait_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Wait(0)


def test_gate_over_time_with_a_manual_clock() -> None:
    clock = ManualClock(start_ms=0)
    due_at_ms = 5_000
    gate = due_gate(due_at_ms, clock.now_ms())
    assert gate == Wait(5_000)
    clock.advance(gate.ms - 1 if isinstance(gate, Wait) else 0)
    assert due_gate(due_at_ms, clock.now_ms()) == Wait(1)
    clock.advance(1)
    assert due_gate(due_at_ms, clock.now_ms()) == Ready()


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(start_ms=1_000)
    assert (clock.now_ms(), clock.monotonic()) == (1_000, 0.0)
    clock.advance(1_500)
    assert (clock.now_ms(), clock.monotonic()) == (2_500, 1.5)
    clock.sleep(0.25)
    assert (clock.now_ms(), clock.monotonic()) == (2_750, 1.75)
    with pytest.raises(ValueError, match="cannot go backwards"):
        clock.advance(-1)


def test_system_clock_reads_real_time() -> None:
    clock: Clock = SystemClock()
    before = time.time_ns() // 1_000_000
    now = clock.now_ms()
    assert before <= now <= time.time_ns() // 1_000_000
    first = clock.monotonic()
    assert clock.monotonic() >= first


def test_both_clocks_satisfy_the_protocol() -> None:
    clocks: list[Clock] = [SystemClock(), ManualClock()]
    assert all(isinstance(c.now_ms(), int) for c in clocks)

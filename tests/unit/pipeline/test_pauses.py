"""Paused retry partitions: held until due, resumed once, and the poll loop's wait."""

from __future__ import annotations

import pytest

from consumer.pipeline.pauses import PausedPartitions

A = ("clinic.events.retry.5s", 0)
B = ("clinic.events.retry.5s", 1)


def test_a_partition_is_held_until_its_due_time_and_handed_back_once() -> None:
    paused = PausedPartitions()
    paused.hold(A, due_at_ms=1_000)
    paused.hold(B, due_at_ms=2_000)
    assert A in paused
    assert B in paused
    assert paused.held() == {A, B}
    assert paused.take_due(999) == []
    assert paused.take_due(1_000) == [A]
    assert A not in paused
    assert paused.held() == {B}
    assert paused.take_due(1_500) == []
    assert paused.take_due(5_000) == [B]
    assert not paused


def test_the_poll_loop_waits_until_the_next_resume_at_most_the_idle_timeout() -> None:
    paused = PausedPartitions()
    assert paused.wait_s(now_ms=0, longest_s=0.25) == 0.25  # nothing held
    paused.hold(A, due_at_ms=1_100)
    paused.hold(B, due_at_ms=1_040)
    assert paused.wait_s(now_ms=1_000, longest_s=0.25) == pytest.approx(0.040)
    assert paused.wait_s(now_ms=500, longest_s=0.25) == 0.25
    assert paused.wait_s(now_ms=2_000, longest_s=0.25) == 0.0  # overdue: do not block


def test_a_revoked_partition_is_forgotten_and_never_resumed() -> None:
    paused = PausedPartitions()
    paused.hold(A, due_at_ms=1_000)
    paused.forget(A)
    paused.forget(B)  # not held: nothing to do
    assert paused.take_due(10_000) == []
    assert paused.wait_s(now_ms=0, longest_s=0.25) == 0.25

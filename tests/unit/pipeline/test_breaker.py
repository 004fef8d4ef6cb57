"""The outage breaker's rules, with a manual clock."""

from __future__ import annotations

import random

import pytest

from consumer.pipeline.breaker import OutageBreaker
from retry_topics.clock import ManualClock
from retry_topics.errors import PolicyError
from retry_topics.limits import BreakerPolicy


def _breaker(**policy: object) -> tuple[OutageBreaker, ManualClock]:
    clock = ManualClock()
    return OutageBreaker(BreakerPolicy(**policy), clock,  # type: ignore[arg-type]
                         rng=random.Random(7)), clock


def test_systemic_failures_on_several_entities_open_it_with_the_reason() -> None:
    breaker, _ = _breaker()
    opened = [breaker.note_failure(f"k{n}".encode(), "http.503") for n in range(5)]
    assert opened == [False, False, False, False, True]
    assert breaker.status().reason == "5 of the last 5 calls failed (503)"


def test_one_entity_failing_again_and_again_is_not_an_outage() -> None:
    breaker, _ = _breaker()
    assert not any(breaker.note_failure(b"k1", "http.503") for _ in range(20))


def test_a_downstream_failing_half_its_calls_is_not_down() -> None:
    breaker, _ = _breaker()
    for n in range(40):
        breaker.note_success()
        assert not breaker.note_failure(f"k{n}".encode(), "http.503")


def test_event_specific_failures_do_not_count() -> None:
    breaker, _ = _breaker()
    assert not any(breaker.note_failure(f"k{n}".encode(), "http.422") for n in range(20))
    assert not any(breaker.note_failure(f"k{n}".encode(), "http.500") for n in range(20))


def test_probes_come_one_at_a_time_within_the_growing_cap_or_at_retry_after() -> None:
    breaker, clock = _breaker(first_probe_ms=1_000, max_probe_ms=8_000)
    for n in range(5):
        breaker.note_failure(f"k{n}".encode(), "http.503")
    clock.advance(1_000)
    assert breaker.probe_due()
    assert not breaker.probe_due()  # one at a time
    breaker.note_failure(b"k0", "http.503", retry_after_ms=30_000)  # the probe failed
    clock.advance(29_999)
    assert not breaker.probe_due()
    clock.advance(1)
    assert breaker.probe_due()


def test_a_probe_decided_without_a_call_frees_the_slot_for_the_next_event() -> None:
    breaker, clock = _breaker()
    for n in range(5):
        breaker.note_failure(f"k{n}".encode(), "http.503")
    clock.advance(1_000)
    assert breaker.probe_due()
    breaker.probe_unused()  # parked behind an earlier event of its key: nothing answers
    assert breaker.probe_due()  # the next waiting event probes, still within the schedule
    assert breaker.is_open
    closed, _ = _breaker()
    closed.probe_unused()  # nothing open: nothing to free
    assert not closed.is_open


def test_the_first_answer_closes_it() -> None:
    breaker, _ = _breaker()
    for n in range(5):
        breaker.note_failure(f"k{n}".encode(), "timeout")
    assert breaker.is_open
    assert not breaker.note_failure(b"k9", "http.422")  # an answer, even a rejection
    assert not breaker.is_open


def test_a_disabled_breaker_never_opens() -> None:
    breaker, _ = _breaker(enabled=False)
    assert not any(breaker.note_failure(f"k{n}".encode(), "connection") for n in range(50))


def test_settings_out_of_range_are_refused_by_name() -> None:
    with pytest.raises(PolicyError, match=r"breaker\.min_failures"):
        BreakerPolicy(window_calls=3, min_failures=5)
    with pytest.raises(PolicyError, match=r"breaker\.max_probe"):
        BreakerPolicy(first_probe_ms=10_000, max_probe_ms=1_000)

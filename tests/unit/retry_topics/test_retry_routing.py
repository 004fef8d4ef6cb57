"""Routing: where a failed record goes next, decided by one pure function."""

from __future__ import annotations

import pytest

from retry_topics.classification import Classification
from retry_topics.errors import PolicyError
from retry_topics.policy import InProcessRetry, RetryPolicy
from retry_topics.routing import (
    DeadLetter,
    RetryInProcess,
    RetryTo,
    dead_letter_undecodable,
    decide_after_failure,
    decide_next,
)

NOW = 1_700_000_000_000
POLICY = RetryPolicy(
    main_topic="clinic.events",
    delays_ms=(5_000, 30_000, 600_000),
    in_process=InProcessRetry(),
)
MAIN, T1, T2, T3 = POLICY.all_topics[:4]
DLQ = POLICY.dlq_topic
TRANSIENT, PERMANENT = Classification.TRANSIENT, Classification.PERMANENT


def test_topics_under_test() -> None:
    assert (MAIN, T1, T2, T3, DLQ) == (
        "clinic.events",
        "clinic.events.retry.5s",
        "clinic.events.retry.30s",
        "clinic.events.retry.10m",
        "clinic.events.dlq",
    )


def test_transient_failure_on_main_goes_to_tier_one() -> None:
    decision = decide_next(POLICY, MAIN, 1, TRANSIENT, NOW)
    assert decision == RetryTo(topic=T1, due_at_ms=NOW + 5_000, attempts=1, tier=POLICY.tiers[0])


def test_transient_failures_walk_the_tiers_then_exhaust() -> None:
    walk: list[RetryTo | DeadLetter] = [
        decide_next(POLICY, MAIN, 1, TRANSIENT, NOW),
        decide_next(POLICY, T1, 2, TRANSIENT, NOW),
        decide_next(POLICY, T2, 3, TRANSIENT, NOW),
        decide_next(POLICY, T3, 4, TRANSIENT, NOW),
    ]
    assert walk == [
        RetryTo(topic=T1, due_at_ms=NOW + 5_000, attempts=1, tier=POLICY.tiers[0]),
        RetryTo(topic=T2, due_at_ms=NOW + 30_000, attempts=2, tier=POLICY.tiers[1]),
        RetryTo(topic=T3, due_at_ms=NOW + 600_000, attempts=3, tier=POLICY.tiers[2]),
        DeadLetter(topic=DLQ, reason="exhausted", attempts=4),
    ]


@pytest.mark.parametrize("source", ["clinic.events", "clinic.events.retry.30s"])
def test_permanent_failure_goes_straight_to_the_dlq(source: str) -> None:
    assert decide_next(POLICY, source, 1 if source == MAIN else 3, PERMANENT, NOW) == (
        DeadLetter(topic=DLQ, reason="permanent", attempts=1 if source == MAIN else 3)
    )


def test_permanent_wins_even_when_attempts_are_exhausted() -> None:
    assert decide_next(POLICY, T3, 4, PERMANENT, NOW) == DeadLetter(
        topic=DLQ, reason="permanent", attempts=4
    )


@pytest.mark.parametrize("attempts_made", [4, 5, 99])
def test_attempts_at_or_beyond_the_maximum_are_exhausted(attempts_made: int) -> None:
    assert decide_next(POLICY, MAIN, attempts_made, TRANSIENT, NOW) == DeadLetter(
        topic=DLQ, reason="exhausted", attempts=attempts_made
    )


def test_single_tier_policy() -> None:
    single = RetryPolicy(main_topic="m", delays_ms=(1_000,), in_process=InProcessRetry())
    assert single.max_topic_attempts == 2
    first = decide_next(single, "m", 1, TRANSIENT, 0)
    assert isinstance(first, RetryTo)
    assert (first.topic, first.due_at_ms) == ("m.retry.1s", 1_000)
    assert decide_next(single, "m.retry.1s", 2, TRANSIENT, 0) == DeadLetter(
        topic="m.dlq", reason="exhausted", attempts=2
    )


def test_a_record_never_moves_back_to_an_earlier_tier() -> None:
    # The attempts header was lost (the caller counted 1), but the record came from tier 2.
    decision = decide_next(POLICY, T2, 1, TRANSIENT, NOW)
    assert isinstance(decision, RetryTo)
    assert decision.topic == T3
    assert decision.attempts == 1
    assert decide_next(POLICY, T3, 1, TRANSIENT, NOW) == DeadLetter(
        topic=DLQ, reason="exhausted", attempts=1
    )


# ---- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize("retry_after_ms", [0, 1, 4_999, 5_000])
def test_retry_after_within_the_next_tier_changes_nothing(retry_after_ms: int) -> None:
    assert decide_next(POLICY, MAIN, 1, TRANSIENT, NOW, retry_after_ms) == decide_next(
        POLICY, MAIN, 1, TRANSIENT, NOW
    )


@pytest.mark.parametrize(
    ("retry_after_ms", "expected_topic"),
    [(5_001, "clinic.events.retry.30s"), (30_000, "clinic.events.retry.30s"), (60_000, T3)],
)
def test_retry_after_jumps_to_the_first_tier_long_enough(
    retry_after_ms: int, expected_topic: str
) -> None:
    decision = decide_next(POLICY, MAIN, 1, TRANSIENT, NOW, retry_after_ms=retry_after_ms)
    assert isinstance(decision, RetryTo)
    assert decision.topic == expected_topic
    assert decision.due_at_ms == NOW + decision.tier.delay_ms
    assert decision.attempts == 1  # skipped tiers are not attempts


def test_retry_after_beyond_every_tier_uses_the_longest_tier_never_the_dlq() -> None:
    decision = decide_next(POLICY, MAIN, 1, TRANSIENT, NOW, retry_after_ms=86_400_000)
    assert decision == RetryTo(topic=T3, due_at_ms=NOW + 600_000, attempts=1, tier=POLICY.tiers[2])
    from_last_but_one = decide_next(POLICY, T2, 3, TRANSIENT, NOW, retry_after_ms=86_400_000)
    assert isinstance(from_last_but_one, RetryTo)
    assert from_last_but_one.topic == T3


def test_retry_after_only_considers_remaining_tiers() -> None:
    # After tier 2, a short Retry-After must not send the record back to tier 1.
    decision = decide_next(POLICY, T2, 3, TRANSIENT, NOW, retry_after_ms=1_000)
    assert isinstance(decision, RetryTo)
    assert decision.topic == T3


def test_retry_after_does_not_rescue_exhausted_or_permanent_failures() -> None:
    assert isinstance(decide_next(POLICY, T3, 4, TRANSIENT, NOW, 1_000), DeadLetter)
    assert isinstance(decide_next(POLICY, MAIN, 1, PERMANENT, NOW, 1_000), DeadLetter)


def test_after_a_jump_the_next_failure_continues_after_the_jumped_tier() -> None:
    jumped = decide_next(POLICY, MAIN, 1, TRANSIENT, NOW, retry_after_ms=600_000)
    assert isinstance(jumped, RetryTo)
    assert jumped.topic == T3
    assert decide_next(POLICY, jumped.topic, jumped.attempts + 1, TRANSIENT, NOW) == (
        DeadLetter(topic=DLQ, reason="exhausted", attempts=2)
    )


# ---- after a failed handler call: again in process, or decide_next ---------------------------

QUICK = RetryPolicy(main_topic="clinic.events", delays_ms=(5_000, 30_000, 600_000),
                    in_process=InProcessRetry(attempts=3, max_wait_ms=1_000))


@pytest.mark.parametrize("calls_made", [1, 2])
def test_a_transient_failure_is_retried_in_process_while_calls_remain(calls_made: int) -> None:
    assert decide_after_failure(QUICK, MAIN, 1, calls_made, TRANSIENT, NOW) == RetryInProcess(
        min_wait_ms=0)


def test_after_the_last_in_process_call_the_record_goes_to_a_tier() -> None:
    assert decide_after_failure(QUICK, MAIN, 1, 3, TRANSIENT, NOW) == decide_next(
        QUICK, MAIN, 1, TRANSIENT, NOW)
    assert decide_after_failure(QUICK, T3, 4, 3, TRANSIENT, NOW) == DeadLetter(
        topic=DLQ, reason="exhausted", attempts=4)


def test_a_permanent_failure_is_never_retried_in_process() -> None:
    assert decide_after_failure(QUICK, MAIN, 1, 1, PERMANENT, NOW) == DeadLetter(
        topic=DLQ, reason="permanent", attempts=1)


def test_a_single_in_process_attempt_means_no_quick_retry() -> None:
    once = RetryPolicy(main_topic="clinic.events", delays_ms=(5_000,),
                       in_process=InProcessRetry(attempts=1))
    assert isinstance(decide_after_failure(once, MAIN, 1, 1, TRANSIENT, NOW), RetryTo)


@pytest.mark.parametrize("retry_after_ms", [0, 700, 1_000])
def test_a_retry_after_that_fits_one_quick_wait_is_its_lower_bound(retry_after_ms: int) -> None:
    assert decide_after_failure(QUICK, MAIN, 1, 1, TRANSIENT, NOW, retry_after_ms) == \
        RetryInProcess(min_wait_ms=retry_after_ms)


def test_a_longer_retry_after_skips_the_quick_calls_and_picks_a_long_enough_tier() -> None:
    decision = decide_after_failure(QUICK, MAIN, 1, 1, TRANSIENT, NOW, retry_after_ms=20_000)
    assert isinstance(decision, RetryTo)
    assert (decision.topic, decision.due_at_ms) == (T2, NOW + 30_000)
    assert decide_after_failure(QUICK, MAIN, 1, 2, TRANSIENT, NOW, 1_001) == decide_next(
        QUICK, MAIN, 1, TRANSIENT, NOW, 1_001)


@pytest.mark.parametrize("calls_made", [0, -1])
def test_calls_made_counts_the_failed_call(calls_made: int) -> None:
    with pytest.raises(PolicyError, match="calls_made counts the call that just failed"):
        decide_after_failure(QUICK, MAIN, 1, calls_made, TRANSIENT, NOW)


# ---- validation and undecodable -----------------------------------------------------------


def test_unknown_source_topic_is_rejected_with_the_known_topics() -> None:
    with pytest.raises(PolicyError, match="neither the main topic nor a retry tier") as caught:
        decide_next(POLICY, "clinic.events.dlq", 1, TRANSIENT, NOW)
    assert T1 in str(caught.value)


@pytest.mark.parametrize("attempts_made", [0, -1])
def test_attempts_made_counts_the_failed_attempt(attempts_made: int) -> None:
    with pytest.raises(PolicyError, match=">= 1"):
        decide_next(POLICY, MAIN, attempts_made, TRANSIENT, NOW)


def test_unknown_classification_is_rejected() -> None:
    bogus: Classification = "maybe"  # type: ignore[assignment]
    with pytest.raises(PolicyError, match="valid values are transient, permanent"):
        decide_next(POLICY, MAIN, 1, bogus, NOW)


def test_undecodable_records_go_to_the_dlq() -> None:
    assert dead_letter_undecodable(POLICY) == DeadLetter(
        topic=DLQ, reason="undecodable", attempts=1
    )
    assert dead_letter_undecodable(POLICY, 3).attempts == 3


DRAINING = POLICY.with_draining((1_000, 60_000, 30_000, 3_600_000))


def test_a_policy_drains_only_delays_it_no_longer_has_and_never_publishes_to_them() -> None:
    assert [(t.topic, t.index) for t in DRAINING.drain_tiers] == [
        ("clinic.events.retry.1s", 0), ("clinic.events.retry.1m", 2),
        ("clinic.events.retry.1h", 3)]
    assert DRAINING.consumed_topics == (MAIN, T1, T2, T3, "clinic.events.retry.1s",
                                        "clinic.events.retry.1m", "clinic.events.retry.1h")
    assert DRAINING.retry_topics == POLICY.retry_topics  # what is published to
    assert DRAINING.max_topic_attempts == POLICY.max_topic_attempts


@pytest.mark.parametrize(("source", "attempts", "expected"), [
    ("clinic.events.retry.1s", 1, T1),  # shorter than every tier: on to the first
    ("clinic.events.retry.1m", 1, T3),  # between 30s and 10m: on to 10m
    ("clinic.events.retry.1m", 3, T3),
    ("clinic.events.retry.1h", 1, DLQ),  # longer than every tier: nothing left
    ("clinic.events.retry.1s", 4, DLQ),  # out of attempts
])
def test_a_record_failing_in_a_draining_tier_goes_on_to_the_next_longer_configured_tier(
    source: str, attempts: int, expected: str,
) -> None:
    assert decide_next(DRAINING, source, attempts, TRANSIENT, NOW).topic == expected

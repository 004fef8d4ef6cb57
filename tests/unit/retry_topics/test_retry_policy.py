"""Retry policies: validated values expanded into a fixed tuple of tiers at construction."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from tenacity import RetryCallState, Retrying

from retry_topics.errors import PolicyError
from retry_topics.policy import (
    BACKOFF_NAMES,
    BackoffName,
    InProcessRetry,
    RetryPolicy,
    RetryTier,
    tier_labels,
)


def make_policy(*delays_ms: int) -> RetryPolicy:
    return RetryPolicy(main_topic="clinic.events", delays_ms=delays_ms, in_process=InProcessRetry())


# ---- InProcessRetry ---------------------------------------------------------------------


def test_in_process_defaults() -> None:
    retry = InProcessRetry()
    assert (retry.attempts, retry.first_wait_ms, retry.backoff, retry.max_wait_ms) == (
        3,
        200,
        "exponential_jitter",
        5000,
    )
    assert retry.retries == 2


def test_in_process_single_attempt_means_no_retries() -> None:
    assert InProcessRetry(attempts=1).retries == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "in-process attempts must be >= 1"),
        ({"first_wait_ms": -1}, "first_wait_ms must be >= 0"),
        ({"max_wait_ms": -1}, "max_wait_ms must be >= 0"),
        ({"first_wait_ms": 500, "max_wait_ms": 100}, r"max_wait_ms \(100\) must be >= "),
        ({"attempts": True}, "must be an integer"),
    ],
)
def test_in_process_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        InProcessRetry(**kwargs)


def test_unknown_backoff_lists_the_valid_ones() -> None:
    with pytest.raises(PolicyError, match="unknown backoff 'linear'") as caught:
        InProcessRetry(backoff="linear")  # type: ignore[arg-type]
    for name in BACKOFF_NAMES:
        assert name in str(caught.value)


def test_in_process_is_frozen() -> None:
    retry = InProcessRetry()
    with pytest.raises(dataclasses.FrozenInstanceError):
        retry.attempts = 5  # type: ignore[misc]


def wait_ms(retry: InProcessRetry, retry_number: int) -> float:
    """tenacity's wait before in-process retry ``retry_number`` (1-based), in milliseconds."""
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = retry_number  # the call that just failed: retry n follows call n
    return retry.wait_strategy()(state) * 1000


def test_wait_immediate_is_zero() -> None:
    retry = InProcessRetry(backoff="immediate")
    assert [wait_ms(retry, n) for n in (1, 2, 5)] == [0, 0, 0]


def test_wait_fixed_is_first_wait() -> None:
    retry = InProcessRetry(backoff="fixed", first_wait_ms=300)
    assert [wait_ms(retry, n) for n in (1, 2, 5)] == pytest.approx([300, 300, 300])


def test_wait_exponential_doubles_and_is_capped() -> None:
    retry = InProcessRetry(backoff="exponential", first_wait_ms=200, max_wait_ms=1000)
    assert [wait_ms(retry, n) for n in range(1, 6)] == pytest.approx(
        [200, 400, 800, 1000, 1000])


def test_wait_exponential_huge_retry_number_stays_capped() -> None:
    retry = InProcessRetry(backoff="exponential", first_wait_ms=1, max_wait_ms=5000)
    assert wait_ms(retry, 10_000) == pytest.approx(5000)


def test_wait_full_jitter_stays_within_the_exponential_ceiling() -> None:
    retry = InProcessRetry(backoff="exponential_jitter", first_wait_ms=200, max_wait_ms=1000)
    for n, ceiling in [(1, 200), (2, 400), (3, 800), (4, 1000), (9, 1000)]:
        draws = [wait_ms(retry, n) for _ in range(200)]
        assert all(0 <= draw <= ceiling for draw in draws)
        assert min(draws) < ceiling // 4  # full jitter reaches far below the ceiling
        assert max(draws) > ceiling * 3 // 4


def test_wait_jitter_is_reproducible_with_a_seeded_rng() -> None:
    retry = InProcessRetry()
    saved = random.getstate()
    try:
        random.seed(7)
        first = [wait_ms(retry, n) for n in (1, 2, 3)]
        random.seed(7)
        second = [wait_ms(retry, n) for n in (1, 2, 3)]
    finally:
        random.setstate(saved)
    assert first == second


def test_wait_jitter_without_rng_uses_global_random() -> None:
    assert 0 <= wait_ms(InProcessRetry(), 1) <= 200


@pytest.mark.parametrize("backoff", BACKOFF_NAMES)
def test_every_backoff_waits_at_most_first_wait_before_the_first_retry(
    backoff: BackoffName,
) -> None:
    assert 0 <= wait_ms(InProcessRetry(backoff=backoff, first_wait_ms=300), 1) <= 300


# ---- RetryTier ---------------------------------------------------------------------------


def test_tier_validation() -> None:
    with pytest.raises(PolicyError, match="tier index must be >= 1"):
        RetryTier(delay_ms=5000, topic="t.retry.5s", index=0)
    with pytest.raises(PolicyError, match="tier delay_ms must be >= 1"):
        RetryTier(delay_ms=0, topic="t.retry.0ms", index=1)
    with pytest.raises(PolicyError, match="invalid characters"):
        RetryTier(delay_ms=5000, topic="bad topic", index=1)


# ---- RetryPolicy -------------------------------------------------------------------------


def test_policy_expands_delays_into_named_tiers() -> None:
    policy = make_policy(5_000, 30_000, 600_000)
    assert policy.tiers == (
        RetryTier(delay_ms=5_000, topic="clinic.events.retry.5s", index=1),
        RetryTier(delay_ms=30_000, topic="clinic.events.retry.30s", index=2),
        RetryTier(delay_ms=600_000, topic="clinic.events.retry.10m", index=3),
    )
    assert policy.dlq_topic == "clinic.events.dlq"
    assert policy.max_topic_attempts == 4
    assert policy.retry_topics == (
        "clinic.events.retry.5s",
        "clinic.events.retry.30s",
        "clinic.events.retry.10m",
    )
    assert policy.all_topics == (
        "clinic.events",
        "clinic.events.retry.5s",
        "clinic.events.retry.30s",
        "clinic.events.retry.10m",
        "clinic.events.dlq",
    )


def test_policy_defaults_in_process_retry_and_is_hashable() -> None:
    policy = RetryPolicy(main_topic="clinic.events", delays_ms=(5_000,))
    assert policy.in_process == InProcessRetry()
    assert hash(policy) == hash(RetryPolicy(main_topic="clinic.events", delays_ms=(5_000,)))


def test_policy_tiers_are_not_an_init_argument() -> None:
    with pytest.raises(TypeError):
        RetryPolicy(main_topic="m", delays_ms=(1,), tiers=())  # type: ignore[call-arg]


def test_policy_needs_a_delay() -> None:
    with pytest.raises(PolicyError, match="needs at least one delay"):
        make_policy()


@pytest.mark.parametrize("delays", [(0,), (5_000, -1)])
def test_policy_delays_must_be_positive(delays: tuple[int, ...]) -> None:
    with pytest.raises(PolicyError, match="must be >= 1"):
        make_policy(*delays)


@pytest.mark.parametrize("delays", [(5_000, 5_000), (30_000, 5_000), (5_000, 60_000, 10_000)])
def test_policy_delays_must_strictly_increase(delays: tuple[int, ...]) -> None:
    with pytest.raises(PolicyError, match="strictly increasing"):
        make_policy(*delays)


def test_policy_rejects_invalid_main_topic() -> None:
    with pytest.raises(PolicyError, match="invalid characters"):
        RetryPolicy(main_topic="clinic events", delays_ms=(5_000,), in_process=InProcessRetry())


def test_policy_rejects_main_topic_whose_tier_names_are_too_long() -> None:
    with pytest.raises(PolicyError, match="at most 249"):
        RetryPolicy(main_topic="x" * 240, delays_ms=(600_000,), in_process=InProcessRetry())


def test_tier_for_topic() -> None:
    policy = make_policy(5_000, 30_000)
    assert policy.tier_for_topic("clinic.events.retry.30s") == policy.tiers[1]
    assert policy.tier_for_topic("clinic.events") is None
    assert policy.tier_for_topic("clinic.events.dlq") is None
    assert policy.tier_for_topic("other.retry.30s") is None


def test_from_generated_multiplies_and_caps() -> None:
    policy = RetryPolicy.from_generated(
        "clinic.events", initial_ms=5_000, multiplier=3, max_ms=60_000, tiers=4
    )
    assert policy.delays_ms == (5_000, 15_000, 45_000, 60_000)
    assert policy.retry_topics[-1] == "clinic.events.retry.1m"
    assert policy.in_process == InProcessRetry()


def test_from_generated_keeps_the_given_in_process_retry() -> None:
    fast = InProcessRetry(attempts=1)
    policy = RetryPolicy.from_generated(
        "clinic.events", initial_ms=1_000, multiplier=2.0, max_ms=10_000, tiers=2, in_process=fast
    )
    assert policy.delays_ms == (1_000, 2_000)
    assert policy.in_process is fast


def test_from_generated_rejects_tiers_collapsed_by_the_cap() -> None:
    with pytest.raises(PolicyError, match="collapse into 3 distinct delays") as caught:
        RetryPolicy.from_generated(
            "clinic.events", initial_ms=5_000, multiplier=2, max_ms=20_000, tiers=5
        )
    assert "initial 5s, multiplier 2, max 20s" in str(caught.value)
    assert "(5s, 10s, 20s)" in str(caught.value)
    assert "raise max or the multiplier, or lower tiers" in str(caught.value)


def test_from_generated_with_multiplier_one_needs_a_single_tier() -> None:
    single = RetryPolicy.from_generated(
        "clinic.events", initial_ms=5_000, multiplier=1, max_ms=5_000, tiers=1
    )
    assert single.delays_ms == (5_000,)
    with pytest.raises(PolicyError, match="collapse"):
        RetryPolicy.from_generated(
            "clinic.events", initial_ms=5_000, multiplier=1, max_ms=50_000, tiers=2
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_ms": 0}, "initial_ms must be >= 1"),
        ({"max_ms": 1_000}, "max_ms must be >= 5000"),
        ({"tiers": 0}, "tiers must be >= 1"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"multiplier": float("nan")}, "multiplier must be >= 1"),
    ],
)
def test_from_generated_validation(kwargs: dict[str, float], message: str) -> None:
    arguments: dict[str, float] = {
        "initial_ms": 5_000,
        "multiplier": 2.0,
        "max_ms": 60_000,
        "tiers": 3,
    }
    arguments.update(kwargs)
    with pytest.raises(PolicyError, match=message):
        RetryPolicy.from_generated(
            "clinic.events",
            initial_ms=int(arguments["initial_ms"]),
            multiplier=arguments["multiplier"],
            max_ms=int(arguments["max_ms"]),
            tiers=int(arguments["tiers"]),
        )


def test_tier_labels_name_each_retry_topic_by_its_delay() -> None:
    policy = RetryPolicy(main_topic="clinic.events", delays_ms=(1_500, 30_000, 600_000))
    assert tier_labels(policy) == {
        "clinic.events.retry.1500ms": "1500ms",
        "clinic.events.retry.30s": "30s",
        "clinic.events.retry.10m": "10m",
    }

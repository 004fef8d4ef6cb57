"""Retry policies as immutable, validated values.

A record that fails with a transient error gets two kinds of retries:

1. **In-process retries** (:class:`InProcessRetry`): a few quick attempts inside the consumer,
   a few hundred milliseconds apart, for blips such as a dropped connection. They hold up the
   partition, so they are short and few. tenacity runs them; the policy names its wait
   strategy (``wait_strategy``).
2. **Topic retries** (:class:`RetryPolicy`): the record is republished to a retry tier topic
   with a fixed delay (``clinic.events.retry.30s``, ``...retry.10m``, ...). Each tier has one
   delay, so the head of each of its partitions is always the next record due, and a waiting
   record never blocks others. After the last tier the record goes to the dead-letter topic.

The delays are expanded into a fixed tuple of :class:`RetryTier` when the policy is built, and
every topic name is validated then, so a bad configuration fails at start-up rather than when
the first record needs a retry. All validation raises :class:`~retry_topics.errors.PolicyError`.

Attempt counting: the main topic attempt is topic attempt 1, tier k holds records that have
made k topic attempts, and ``max_topic_attempts == 1 + len(delays_ms)``.

**Draining tiers**: when the configured delays change, the tiers of the old delays still
exist and may hold records. A policy built ``with_draining`` those delays consumes them too
(never publishes to them): a record that fails there goes on to the first configured tier
longer than its tier, as if it had come from the configured tier just before that one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Literal, get_args

from tenacity import wait_exponential, wait_fixed, wait_none, wait_random_exponential
from tenacity.wait import wait_base

from retry_topics.durations import format_duration
from retry_topics.errors import PolicyError
from retry_topics.naming import dlq_topic_name, retry_topic_name, validate_topic_name

__all__ = [
    "BACKOFF_NAMES", "BackoffName", "InProcessRetry", "RetryPolicy", "RetryTier", "tier_labels",
]

BackoffName = Literal["immediate", "fixed", "exponential", "exponential_jitter"]
BACKOFF_NAMES: tuple[BackoffName, ...] = get_args(BackoffName)


def _require_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise PolicyError(f"{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class InProcessRetry:
    """Quick retries inside the consumer before a record is sent to a retry topic.

    ``attempts`` counts the first try: ``attempts=1`` means no in-process retries.
    """

    attempts: int = 3
    first_wait_ms: int = 200
    backoff: BackoffName = "exponential_jitter"
    max_wait_ms: int = 5000

    def __post_init__(self) -> None:
        _require_int("in-process attempts", self.attempts, 1)
        _require_int("in-process first_wait_ms", self.first_wait_ms, 0)
        _require_int("in-process max_wait_ms", self.max_wait_ms, 0)
        if self.backoff not in BACKOFF_NAMES:
            raise PolicyError(
                f"unknown backoff {self.backoff!r}; valid backoffs are {', '.join(BACKOFF_NAMES)}"
            )
        if self.max_wait_ms < self.first_wait_ms:
            raise PolicyError(
                f"in-process max_wait_ms ({self.max_wait_ms}) must be >= "
                f"first_wait_ms ({self.first_wait_ms})"
            )

    @property
    def retries(self) -> int:
        """Number of in-process retries after the first try."""
        return self.attempts - 1

    def wait_strategy(self) -> wait_base:
        """tenacity's wait before each in-process retry, in seconds, for this backoff.

        ``immediate`` waits nothing, ``fixed`` waits ``first_wait_ms``, ``exponential``
        doubles from ``first_wait_ms`` and ``exponential_jitter`` draws uniformly between 0
        and that ("full jitter", which spreads out the retries of many consumers that failed
        together). Every wait is capped at ``max_wait_ms``.
        """
        first_s, cap_s = self.first_wait_ms / 1000, self.max_wait_ms / 1000
        if self.backoff == "immediate":
            return wait_none()
        if self.backoff == "fixed":
            return wait_fixed(first_s)
        if self.backoff == "exponential":
            return wait_exponential(multiplier=first_s, max=cap_s)
        return wait_random_exponential(multiplier=first_s, max=cap_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryTier:
    """One retry topic and its fixed delay; ``index`` is 1-based (tier 1 is the first retry).

    A ``draining`` tier (a delay no longer configured) is consumed, never published to; its
    ``index`` is the number of configured tiers shorter than it (0: like the main topic), so
    a record failing there goes on to the next configured tier.
    """

    delay_ms: int
    topic: str
    index: int
    draining: bool = False

    def __post_init__(self) -> None:
        _require_int("tier delay_ms", self.delay_ms, 1)
        _require_int("tier index", self.index, 0 if self.draining else 1)
        validate_topic_name(self.topic)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """The retry tiers of one main topic, expanded from strictly increasing delays."""

    main_topic: str
    delays_ms: tuple[int, ...]
    in_process: InProcessRetry = field(default_factory=InProcessRetry)
    draining_ms: tuple[int, ...] = ()  # old delays whose tiers are consumed until empty
    tiers: tuple[RetryTier, ...] = field(init=False)
    drain_tiers: tuple[RetryTier, ...] = field(init=False)

    def __post_init__(self) -> None:
        validate_topic_name(self.main_topic)
        delays = tuple(self.delays_ms)
        if not delays:
            raise PolicyError(f"retry policy for {self.main_topic!r} needs at least one delay")
        for position, delay in enumerate(delays, start=1):
            _require_int(f"delay #{position}", delay, 1)
        for earlier, later in pairwise(delays):
            if later <= earlier:
                raise PolicyError(
                    f"retry delays must be strictly increasing (one topic per delay), "
                    f"got {list(delays)}: {later} ms follows {earlier} ms"
                )
        tiers = tuple(
            RetryTier(delay_ms=delay, topic=retry_topic_name(self.main_topic, delay), index=index)
            for index, delay in enumerate(delays, start=1)
        )
        dlq_topic_name(self.main_topic)  # validates that the DLQ name fits as well
        draining = tuple(sorted(set(self.draining_ms) - set(delays)))
        for delay in draining:
            _require_int("draining delay", delay, 1)
        drain_tiers = tuple(
            RetryTier(delay_ms=delay, topic=retry_topic_name(self.main_topic, delay),
                      index=sum(1 for configured in delays if configured < delay), draining=True)
            for delay in draining
        )
        object.__setattr__(self, "delays_ms", delays)
        object.__setattr__(self, "draining_ms", draining)
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "drain_tiers", drain_tiers)

    def with_draining(self, delays_ms: tuple[int, ...]) -> RetryPolicy:
        """This policy, also consuming the tiers of ``delays_ms`` (those not configured)."""
        return replace(self, draining_ms=delays_ms)

    @classmethod
    def from_generated(
        cls,
        main_topic: str,
        initial_ms: int,
        multiplier: float,
        max_ms: int,
        tiers: int,
        in_process: InProcessRetry | None = None,
    ) -> RetryPolicy:
        """Build a policy whose delays are ``initial_ms * multiplier**k``, capped at ``max_ms``.

        If the cap (or rounding) would make two tiers share a delay, this raises
        :class:`PolicyError` instead of silently dropping tiers: fewer tiers would mean fewer
        retries than the operator asked for, so the configuration must change (raise
        ``max_ms``, the multiplier, or lower ``tiers``).
        """
        _require_int("initial_ms", initial_ms, 1)
        _require_int("max_ms", max_ms, initial_ms)
        _require_int("tiers", tiers, 1)
        if not multiplier >= 1.0:
            raise PolicyError(f"multiplier must be >= 1, got {multiplier!r}")
        delays: list[int] = []
        value = float(initial_ms)
        for _ in range(tiers):
            delays.append(min(round(value), max_ms))
            value = min(value * multiplier, float(max_ms))
        distinct = sorted(set(delays))
        if len(distinct) < tiers:
            raise PolicyError(
                f"{tiers} tiers from initial {format_duration(initial_ms)}, multiplier "
                f"{multiplier}, max {format_duration(max_ms)} collapse into {len(distinct)} "
                f"distinct delays ({', '.join(map(format_duration, distinct))}); each tier "
                "needs its own delay: raise max or the multiplier, or lower tiers"
            )
        return cls(
            main_topic=main_topic,
            delays_ms=tuple(delays),
            in_process=in_process if in_process is not None else InProcessRetry(),
        )

    @property
    def dlq_topic(self) -> str:
        """The dead-letter topic of the main topic."""
        return dlq_topic_name(self.main_topic)

    @property
    def max_topic_attempts(self) -> int:
        """Topic attempts before a transient failure is dead-lettered (main + one per tier)."""
        return 1 + len(self.tiers)

    @property
    def retry_topics(self) -> tuple[str, ...]:
        """The tier topics, shortest delay first."""
        return tuple(tier.topic for tier in self.tiers)

    @property
    def consumed_topics(self) -> tuple[str, ...]:
        """What a consumer subscribes to: main topic, tiers, then draining tiers."""
        return (self.main_topic, *self.retry_topics, *(t.topic for t in self.drain_tiers))

    @property
    def all_topics(self) -> tuple[str, ...]:
        """Main topic, every tier topic (shortest delay first) and the DLQ topic."""
        return (self.main_topic, *self.retry_topics, self.dlq_topic)

    def tier_for_topic(self, topic: str) -> RetryTier | None:
        """The tier (configured or draining) whose topic is ``topic``, or ``None`` (main,
        DLQ or a foreign topic)."""
        for tier in (*self.tiers, *self.drain_tiers):
            if tier.topic == topic:
                return tier
        return None


def tier_labels(policy: RetryPolicy) -> dict[str, str]:
    """Retry topic -> its delay as written in topic names and metrics (``"30s"``).

    Built once by callers that label every event, so labelling is a dict lookup.
    """
    return {tier.topic: format_duration(tier.delay_ms)
            for tier in (*policy.tiers, *policy.drain_tiers)}

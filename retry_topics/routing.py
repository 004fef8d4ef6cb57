"""Where next for a failed record, decided by pure functions.

Given the retry policy, the topic the record was consumed from, how many topic attempts have
been made, how the failure was classified and the current time, :func:`decide_next` returns
either :class:`RetryTo` (republish to a retry tier, due at a given time) or
:class:`DeadLetter` (republish to the DLQ, with a reason). :func:`decide_after_failure`
comes first, after every failed handler call: it answers :class:`RetryInProcess` (call
again, in this process, after a quick wait) or defers to :func:`decide_next`. The caller
only executes the decision, so every routing rule is testable without Kafka:

* **in process** while the policy's ``in_process.attempts`` calls are not all made, for a
  transient failure whose Retry-After (if any) fits in one quick wait
  (``<= in_process.max_wait_ms``); the quick wait is then at least that Retry-After.
  A longer Retry-After skips the quick calls: the record goes on to a tier at once;
* **permanent** failures go to the DLQ at once (reason ``"permanent"``): retrying cannot help;
* **transient** failures go to the next tier. ``attempts_made`` counts topic attempts,
  including the one that just failed: after the main-topic attempt it is 1 and the record goes
  to tier 1; after the attempt in tier k it is k + 1 and the record goes to tier k + 1;
* once ``attempts_made >= policy.max_topic_attempts`` (or no tier is left after the source
  tier) a transient failure is dead-lettered with reason ``"exhausted"``;
* a record never moves to a tier that is not after the one it came from, so progress is
  guaranteed even if the attempts header was lost or tiers were skipped;
* **Retry-After**: when the downstream asked to wait ``retry_after_ms``, the record jumps to
  the first remaining tier whose delay is at least that long. If Retry-After exceeds every
  remaining tier, the longest tier is used: Retry-After alone never sends a record to the
  DLQ, and the due time is always ``now + tier delay`` so that the head of each tier
  partition stays the record due first. Skipped tiers are not counted as attempts.

Undecodable records bypass the policy: :func:`dead_letter_undecodable` names their DLQ.
"""

from __future__ import annotations

from dataclasses import dataclass

from retry_topics.classification import Classification, parse_classification
from retry_topics.errors import PolicyError
from retry_topics.headers import DlqReason
from retry_topics.policy import RetryPolicy, RetryTier

__all__ = [
    "DeadLetter", "Decision", "RetryInProcess", "RetryTo", "Step", "dead_letter_undecodable",
    "decide_after_failure", "decide_next",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryTo:
    """Republish to ``topic`` (retry tier ``tier``), not to be processed before ``due_at_ms``."""

    topic: str
    due_at_ms: int
    attempts: int
    tier: RetryTier


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """Republish to the dead-letter ``topic`` because of ``reason``."""

    topic: str
    reason: DlqReason
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryInProcess:
    """Call the handler again in this process, after at least ``min_wait_ms`` (a Retry-After
    the quick waits honour; 0 without one) and the policy's backoff."""

    min_wait_ms: int


Decision = RetryTo | DeadLetter
Step = RetryInProcess | RetryTo | DeadLetter


def _source_index(policy: RetryPolicy, source_topic: str) -> int:
    """0 for the main topic, k for retry tier k."""
    if source_topic == policy.main_topic:
        return 0
    tier = policy.tier_for_topic(source_topic)
    if tier is None:
        raise PolicyError(
            f"topic {source_topic!r} is neither the main topic nor a retry tier of "
            f"{policy.main_topic!r} (tiers: {', '.join(policy.retry_topics)})"
        )
    return tier.index


def decide_next(
    policy: RetryPolicy,
    source_topic: str,
    attempts_made: int,
    classification: Classification,
    now_ms: int,
    retry_after_ms: int | None = None,
) -> RetryTo | DeadLetter:
    """Decide where a record that just failed goes next (see the module docstring)."""
    if attempts_made < 1:
        raise PolicyError(
            f"attempts_made counts the attempt that just failed, so it is >= 1; got {attempts_made}"
        )
    classification = parse_classification(classification)
    source_index = _source_index(policy, source_topic)
    if classification is Classification.PERMANENT:
        return DeadLetter(topic=policy.dlq_topic, reason="permanent", attempts=attempts_made)
    next_index = max(attempts_made, source_index + 1)
    if attempts_made >= policy.max_topic_attempts or next_index > len(policy.tiers):
        return DeadLetter(topic=policy.dlq_topic, reason="exhausted", attempts=attempts_made)
    remaining = policy.tiers[next_index - 1 :]
    tier = remaining[0]
    if retry_after_ms is not None and retry_after_ms > tier.delay_ms:
        long_enough = [t for t in remaining if t.delay_ms >= retry_after_ms]
        tier = long_enough[0] if long_enough else remaining[-1]
    return RetryTo(
        topic=tier.topic, due_at_ms=now_ms + tier.delay_ms, attempts=attempts_made, tier=tier
    )


def decide_after_failure(
    policy: RetryPolicy,
    source_topic: str,
    attempts_made: int,
    calls_made: int,
    classification: Classification,
    now_ms: int,
    retry_after_ms: int | None = None,
) -> Step:
    """Decide what follows handler call ``calls_made`` (1-based, within topic attempt
    ``attempts_made``) that just failed: another call in process, or :func:`decide_next`."""
    if calls_made < 1:
        raise PolicyError(
            f"calls_made counts the call that just failed, so it is >= 1; got {calls_made}"
        )
    classification = parse_classification(classification)
    quick = policy.in_process
    if (
        classification is Classification.TRANSIENT
        and calls_made < quick.attempts
        and (retry_after_ms is None or retry_after_ms <= quick.max_wait_ms)
    ):
        return RetryInProcess(min_wait_ms=max(0, retry_after_ms or 0))
    return decide_next(
        policy, source_topic, attempts_made, classification, now_ms, retry_after_ms
    )


def dead_letter_undecodable(policy: RetryPolicy, attempts_made: int = 1) -> DeadLetter:
    """The decision for a record whose value could not be decoded: straight to the DLQ."""
    return DeadLetter(topic=policy.dlq_topic, reason="undecodable", attempts=attempts_made)

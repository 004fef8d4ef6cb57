"""The one place that names retry, dead-letter and audit topics.

Every topic that belongs to a main topic is derived from the main topic's name, so an operator
can find all of them with one prefix and nothing has to be configured twice::

    clinic.events              main topic (given)
    clinic.events.retry.5s     retry tier with a 5 second delay  (retry_topic_name)
    clinic.events.retry.10m    retry tier with a 10 minute delay
    clinic.events.dlq          dead-letter topic                 (dlq_topic_name)
    clinic.events.dlq-ledger   which dead letters are resolved   (dlq_ledger_topic_name)
    clinic.events.audit        audit topic                       (audit_topic_name)

The delay part is :func:`~retry_topics.durations.format_duration`'s canonical form, so a delay
always maps to the same name. Every name, given or derived, is checked against Kafka's rules
(ASCII letters, digits, ``.``, ``_`` and ``-``; at most 249 characters; not ``.`` or ``..``):
a long main topic can make a derived name too long, and that must fail when the policy is
built, not when the first record is republished.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from retry_topics.durations import format_duration, parse_duration_ms
from retry_topics.errors import PolicyError, TopicNameError

__all__ = [
    "MAX_TOPIC_NAME_LENGTH",
    "audit_topic_name",
    "derived_kind",
    "dlq_ledger_topic_name",
    "dlq_topic_name",
    "retry_tier_delay_ms",
    "retry_tiers_of",
    "retry_topic_name",
    "validate_topic_name",
]

#: Kafka's limit on the length of a topic name.
MAX_TOPIC_NAME_LENGTH = 249

_LEGAL = re.compile(r"[a-zA-Z0-9._-]+")
#: A derived name's ending: ``.retry.<delay>`` (format_duration's units), ``.dlq``,
#: ``.dlq-ledger``, ``.audit``.
_DERIVED = re.compile(
    r"\.(?:(?P<retry>retry)\.(?:\d+(?:ms|s|m|h|d))+|(?P<dlq>dlq)|(?P<ledger>dlq-ledger)"
    r"|(?P<audit>audit)|(?P<status>status))$")


def validate_topic_name(name: str) -> str:
    """Return ``name`` unchanged if Kafka accepts it as a topic name, else raise PolicyError."""
    if not name:
        raise TopicNameError("topic name must not be empty")
    if name in {".", ".."}:
        raise TopicNameError(f"topic name {name!r} is not allowed by Kafka")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise TopicNameError(
            f"topic name {name[:24]}...{name[-24:]} is {len(name)} characters long; "
            f"Kafka allows at most {MAX_TOPIC_NAME_LENGTH}"
        )
    if _LEGAL.fullmatch(name) is None:
        bad = sorted({char for char in name if _LEGAL.fullmatch(char) is None})
        raise TopicNameError(
            f"topic name {name!r} contains invalid characters {''.join(bad)!r}; "
            "only ASCII letters, digits, '.', '_' and '-' are allowed"
        )
    return name


def retry_topic_name(main: str, delay_ms: int) -> str:
    """Name of the retry tier of ``main`` that holds records for ``delay_ms``."""
    if delay_ms <= 0:
        raise PolicyError(f"retry delay must be positive, got {delay_ms} ms")
    validate_topic_name(main)
    return validate_topic_name(f"{main}.retry.{format_duration(delay_ms)}")


def dlq_topic_name(main: str) -> str:
    """Name of the dead-letter topic of ``main``."""
    validate_topic_name(main)
    return validate_topic_name(f"{main}.dlq")


def dlq_ledger_topic_name(main: str) -> str:
    """Name of the compacted topic that records which dead letters of ``main`` are resolved
    (replayed or discarded), keyed by their DLQ coordinates."""
    validate_topic_name(main)
    return validate_topic_name(f"{main}.dlq-ledger")


def audit_topic_name(main: str) -> str:
    """Name of the audit topic of ``main``."""
    validate_topic_name(main)
    return validate_topic_name(f"{main}.audit")


def status_topic_name(main: str) -> str:
    """Name of the compacted topic where each ``run`` of ``main`` states whether its
    downstream is down or its dead letters are halted (read by ``lag``)."""
    validate_topic_name(main)
    return validate_topic_name(f"{main}.status")


def derived_kind(name: str) -> str | None:
    """``retry``, ``dlq``, ``ledger``, ``audit`` or ``status`` if ``name`` has the form of a
    topic derived from some main topic, else ``None``.

    Why: such a topic is never a main topic. Publishing to one would hand consumers records
    without the headers that topic's records carry, and treating it as a main topic would
    derive a second family from it (``x.dlq.retry.5s``, ``x.dlq.dlq``).
    """
    match = _DERIVED.search(name)
    return None if match is None else str(match.lastgroup)


def retry_tiers_of(main: str, names: Iterable[str]) -> list[str]:
    """The names among ``names`` that are retry tiers of ``main``, whatever their delay.

    Why: when the configured delays change, the tiers of the old delays still exist and may
    hold records that no consumer of the new configuration reads.
    """
    return sorted(name for name in names if _tier_label(main, name) is not None)


def retry_tier_delay_ms(main: str, topic: str) -> int:
    """The delay of ``topic``, a retry tier of ``main`` (see ``retry_tiers_of``)."""
    label = _tier_label(main, topic)
    if label is None:
        raise PolicyError(f"{topic!r} is not a retry tier of {main!r}")
    return parse_duration_ms(label)


def _tier_label(main: str, name: str) -> str | None:
    """The delay part of ``name`` if it is a retry tier of ``main`` (``30s``), else None."""
    prefix = f"{main}.retry."
    label = name[len(prefix):]
    if name.startswith(prefix) and "." not in label and derived_kind(name) == "retry":
        return label
    return None

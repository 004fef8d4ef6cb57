"""Which dead letters are resolved: the DLQ ledger, decided without Kafka.

A dead letter is a work item, open until an operator replays or discards it. Its resolution
is one entry in the compacted topic ``<main>.dlq-ledger``
(:func:`retry_topics.naming.dlq_ledger_topic_name`): the key is the record's DLQ coordinates,
``<dlq topic>:<partition>:<offset>`` (:func:`ledger_key`), the value a small JSON document
saying how, when, by whom and why (:class:`Resolution`). Coordinates, not event ids: the same
event dead-lettered again after a replay is a new record, a new work item.

:class:`DlqLedger` is the state read back from the topic. Entries are final: a resolved record
is never replayed again, whatever the options. An entry that cannot be read still counts as
resolved (the record was resolved somehow; replaying it again could deliver it twice).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

OPEN = "open"
UNREADABLE: Literal["unreadable"] = "unreadable"
ResolutionStatus = Literal["replayed", "discarded", "unreadable"]


def ledger_key(dlq_topic: str, partition: int, offset: int) -> str:
    """The ledger key of a DLQ record: ``<dlq topic>:<partition>:<offset>``."""
    return f"{dlq_topic}:{partition}:{offset}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """How one DLQ record was resolved: replayed (to ``target_topic``) or discarded
    (``reason``), when (ISO 8601 UTC), by which OS user and ``actor`` (a ticket, a name)."""

    status: ResolutionStatus
    at: str | None = None
    user: str | None = None
    actor: str | None = None
    reason: str | None = None
    target_topic: str | None = None
    event_id: str | None = None
    forced: bool = False

    def to_json(self) -> bytes:
        """The ledger value: the fields that are set, as compact JSON."""
        fields = {k: v for k, v in asdict(self).items() if v not in (None, False)}
        return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Resolution:
        """Read a ledger value; one that cannot be read is an ``unreadable`` resolution."""
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return cls(status=UNREADABLE)
        if not isinstance(document, dict) or document.get("status") not in (
                "replayed", "discarded"):
            return cls(status=UNREADABLE)
        return cls(status=document["status"], forced=document.get("forced") is True,
                   **{name: str(document[name]) for name in (
                       "at", "user", "actor", "reason", "target_topic", "event_id")
                      if document.get(name) is not None})

    def view(self) -> dict[str, Any]:
        """JSON-ready, for ``dlq show``."""
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}


class DlqLedger:
    """Resolutions by ledger key, as read from the ledger topic up to its end."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, Resolution] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Take one ledger record into account; a later entry of a key replaces an earlier
        one, and a tombstone (no value) removes it, as compaction would."""
        if key is None:
            return
        text = key.decode("utf-8", errors="replace")
        if value is None:
            self._entries.pop(text, None)
        else:
            self._entries[text] = Resolution.from_json(value)

    def resolution(self, dlq_topic: str, partition: int, offset: int) -> Resolution | None:
        """How the record was resolved, or None while it is open."""
        return self._entries.get(ledger_key(dlq_topic, partition, offset))

    def __len__(self) -> int:
        return len(self._entries)

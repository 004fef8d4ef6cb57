"""What replaying or discarding a dead letter does to its key's chain of parked events.

Under ``[ordering] after_dead_letter = "hold"`` a dead-lettered event stays in its key's
chain in the dedup store, and the key's later events follow it to the DLQ, until it is
replayed and delivered (``docs/ordering.md``). A discard is the operator's other answer:
the event will never be delivered, so it must stop holding its key back.
:func:`release_discarded` takes each discarded record's link out of its chain, once the
discard is committed: a discard that did not commit leaves the record open, and its key's
chain as it was, so a later replay of the record still comes first.

Only a link the consumer holds as ``dead_lettered`` is released: an event that came back
from another copy (replayed, and waiting in a tier again) keeps its place. The next link
becomes the head, as if the discarded event had been delivered: a follower waiting in a
tier is delivered when it next comes out of it; a follower already in the DLQ holds the key
in its turn, until it is replayed or discarded too.

A replay takes a held head's followers along (:class:`ParkedFollowers`): the dead letters
parked behind an event it replays go in the same run, right after it, whatever the filter
(``dlq replay --error-class http.422`` selects the head; its followers carry no error of
their own). The DLQ holds a key's records in chain order on one partition, and a replay
reads each partition in offset order, so a head is always met before its followers and the
copies reach the original topic head first. A head the ledger has as replayed by an earlier
run counts too when the filter selects it: its followers, left open by that run (an
interruption, an earlier version), go now.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from consumer.dedup.chains import ChainStore, entity_key
from consumer.ops.dlq.model import AlreadyResolved, Decision, DlqRecord, Replay, Skip

__all__ = ["ParkedFollowers", "release_discarded"]

#: The states of a link a discard releases: the consumer's, once it dead-lettered the event
#: (``dead_lettering`` until the hop is known durable). See ``retry_topics.ordering.left``.
_RELEASED = ("dead_lettering", "dead_lettered")


@dataclass(slots=True)
class ParkedFollowers:
    """The heads a replay run has replayed so far, to take their parked followers along.

    Fed every examined record's decision in DLQ order (:meth:`note`); asked of each record
    the filter did not select (:meth:`head_of`).
    """

    _heads: set[str] = field(default_factory=set)

    def head_of(self, record: DlqRecord) -> str | None:
        """The replayed event ``record`` is parked behind, if it is open and parked behind
        one; None otherwise (it is left to the filter)."""
        head = record.parked_behind
        return head if record.resolution is None and head in self._heads else None

    def note(self, record: DlqRecord, decision: Decision) -> None:
        """A replayed (or earlier replayed, and selected) event becomes a head to follow; one
        left open (skipped) is not, even if an older copy of it was replayed: its followers
        would only follow it back to the DLQ."""
        event_id = record.event_id
        if not event_id:
            return
        if isinstance(decision, Replay) or (
                isinstance(decision, AlreadyResolved)
                and decision.resolution.status == "replayed"):
            self._heads.add(event_id)
        elif isinstance(decision, Skip):
            self._heads.discard(event_id)


def release_discarded(store: ChainStore, discarded: Iterable[DlqRecord]) -> int:
    """Take the discarded records' dead-lettered links out of their keys' chains; how many
    were still there. One read for all, one write per link found: a discard run again over
    records discarded long since (to release what a failed store write left held) writes
    nothing for them. A record without a key or an event id has no link."""
    linked = [(entity_key(record.key), event_id) for record in discarded
              if record.key is not None and (event_id := record.event_id)]
    if not linked:
        return 0
    chains = store.chains(sorted({key for key, _ in linked}))
    released = 0
    for key, event_id in linked:
        if any(link.event_id == event_id and link.state in _RELEASED
               for link in chains.get(key, ())):
            store.leave(key, event_id, "dead_lettered")
            released += 1
    return released

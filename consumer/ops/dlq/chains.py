"""What a discarded dead letter does to its key's chain of parked events.

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
"""

from __future__ import annotations

from collections.abc import Iterable

from consumer.dedup.chains import ChainStore, entity_key
from consumer.ops.dlq.model import DlqRecord

__all__ = ["release_discarded"]


def release_discarded(store: ChainStore, discarded: Iterable[DlqRecord]) -> None:
    """Take the discarded records' dead-lettered links out of their keys' chains (one
    store write per record; a record without a key or an event id has no link)."""
    for record in discarded:
        event_id = record.event_id
        if record.key is not None and event_id:
            store.leave(entity_key(record.key), event_id, "dead_lettered")

"""Order per entity across retry hops: parked keys, as the pipeline applies them.

While an event of key K waits in a retry tier, later events of K must not overtake it. The
dedup store keeps, per key, the chain of outstanding events (``consumer.dedup.chains``); the
pure rules are in :mod:`retry_topics.ordering`. This module is where the pipeline meets them:

* **Per chunk** the processor asks :meth:`EntityOrder.view` once: one ``chains`` round trip
  for the chunk's keys (none for keys without a chain). Links of events already delivered
  (recorded, or staged by a lane and not yet recorded) are left out of the view: their
  ``leave`` is on its way, and a follower must not wait for it.
* **Per record** :meth:`ChunkChains.place` says whether the record proceeds (its key's chain
  is empty, or it is the head), is parked behind the head (republished to its predecessor's
  tier, no handler call, no attempt spent), or follows a held dead-lettered head to the DLQ.
  A record that is parked or routed to a retry tier joins the chain *before* its hop is
  published (``join``): a crash between the two leaves a link whose record is redelivered
  and looked at again, which ``join`` (idempotent) takes in its stride.
* **Leaving** happens only once the fate is durable, on the poll thread: a delivered event
  leaves right after its outcome is recorded (``settle``, from ``Runner._finish_many``); a
  link whose event is durably delivered anyway (a duplicate, a crash before the leave) is
  removed by the next view of its key; a dead-lettered head leaves on the DLQ ack under
  ``after_dead_letter = "release"`` or stays as ``dead_lettered`` under ``"hold"``
  (``dead_lettered``, from ``Runner._record_durable``). Leaving earlier could let a
  follower on another instance be delivered before a head that a crash makes deliver again.
* **To the DLQ**, a chained record (a head, or a follower of a dead-lettered head) is
  marked ``dead_lettering`` *before* its hop is handed over, and ``dead_lettered`` once the
  hop is durable (``dead_lettered``). A follower goes to the DLQ only behind a durable
  ``dead_lettered`` predecessor, so the DLQ gets a chain in order. A kill between the
  hop's commit and that mark leaves the link ``dead_lettering``: a view that sees one
  notes it, and the poll thread, a few seconds later, asks the group's committed offset of
  the hop's source partition (``confirm_durable``): past the source record, the hop is
  durable (a hop commits only with an offset past its source record) and the link is
  marked. Not past it, the source record is still to be processed again, which rewrites
  the link.

Lanes already run one record of a key at a time, in order, retries first; so within a chunk
the view is updated as records are decided (a delivered head no longer holds its followers
back, a record that joins holds back the ones after it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from consumer.dedup.chains import ChainStore, entity_key
from consumer.pipeline.broker import BrokerError, Partition
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.records import Fate, InboundRecord, Republished
from retry_topics.clock import Clock
from retry_topics.ordering import (
    PROCEED,
    Link,
    LinkState,
    OrderingPolicy,
    Placement,
    Position,
    joined,
    left,
    place,
)
from retry_topics.routing import DeadLetter

LOG = logging.getLogger("clinic_events.ordering")
PARKED_ERROR_CLASS = "clinic_events.parked"
"""The error class a parked hop carries in fates and logs (no handler call failed)."""
UNCONFIRMED_GRACE_S = 5.0
"""How long a ``dead_lettering`` link may be seen before its hop is checked: longer than a
hop takes to commit (at once, as a rule), so the check runs only after a crash or a
stall."""
UNCONFIRMED_FORGET_S = 120.0
"""A noted link no view has shown for this long is no longer checked (nobody waits)."""

Unconfirmed = tuple[str, str, Position]
"""A ``dead_lettering`` link a view saw: its key, its event id, its hop's source record."""


class EntityOrder:
    """Parked keys for the pipeline: one per consumer, shared by every lane (thread-safe:
    all state is in the store, except each chunk's own view)."""

    def __init__(self, store: ChainStore, policy: OrderingPolicy, outcomes: PendingOutcomes,
                 clock: Clock, dlq_topic: str) -> None:
        self._store = store
        self.policy = policy
        self._outcomes = outcomes
        self._clock = clock
        self._dlq_topic = dlq_topic
        # dead_lettering links views saw -> (first seen, last seen), clock.monotonic()
        self._unconfirmed: dict[Unconfirmed, tuple[float, float]] = {}
        self._unconfirmed_lock = threading.Lock()
        self._checked_at = float("-inf")

    def consumed(self) -> None:
        """Records were just consumed: take in other processes' chains before they are
        viewed (``ChainStore.refresh_chains``). Called by the poll thread."""
        self._store.refresh_chains()

    def view(self, records: Sequence[InboundRecord]) -> ChunkChains:
        """The chains of the keys of ``records`` (decoded ones with a key), in one round trip."""
        if not self._store.may_have_chains():
            return ChunkChains(self, {})  # the usual case: no key waits for anything
        keys = {entity_key(r.key) for r in records if r.key is not None and r.event_id}
        found = self._store.chains(list(keys)) if keys else {}
        if found:
            self._note_unconfirmed(found)
            done = self._delivered_links(found)
            if done:
                found = {key: kept for key, chain in found.items()
                         if (kept := [link for link in chain if link.event_id not in done])}
        return ChunkChains(self, found)

    def _delivered_links(self, found: dict[str, list[Link]]) -> set[str]:
        """The linked events already delivered; those recorded durably leave at once.

        A durable delivery still linked is a leave that did not happen (a crash right after
        the outcome was written), or a duplicate's copy delivered elsewhere: cleaning it up
        here keeps ``lag``'s count honest. A delivery only staged by a lane leaves later,
        from ``settle``.
        """
        ids = [link.event_id for chain in found.values() for link in chain]
        done = {eid for eid, outcome in self._outcomes.lookup(ids).items()
                if outcome == "delivered"}
        if done:
            durable = {eid for eid, outcome in self._outcomes.store.lookup(sorted(done)).items()
                       if outcome == "delivered"}
            for key, chain in found.items():
                for link in chain:
                    if link.event_id in durable:
                        self._store.leave(key, link.event_id)
        return done

    def _note_unconfirmed(self, found: dict[str, list[Link]]) -> None:
        """Note the ``dead_lettering`` links of ``found`` for ``confirm_durable``."""
        seen = [(key, link.event_id, link.hop) for key, chain in found.items()
                for link in chain if link.state == "dead_lettering" and link.hop is not None]
        if not seen:
            return
        now = self._clock.monotonic()
        with self._unconfirmed_lock:
            for key, event_id, hop in seen:
                if hop is not None:
                    first, _ = self._unconfirmed.get((key, event_id, hop), (now, now))
                    self._unconfirmed[(key, event_id, hop)] = (first, now)

    @property
    def unconfirmed(self) -> bool:
        """Whether views saw ``dead_lettering`` links that ``confirm_durable`` may settle."""
        return bool(self._unconfirmed)

    def confirm_durable(self, committed: Callable[[Sequence[Partition]], Mapping[Partition, int]],
                        ) -> None:
        """Mark ``dead_lettered`` the links seen ``dead_lettering`` for a while whose DLQ hop
        is durable: the group's ``committed`` offset of the hop's source partition is past
        its source record (poll thread; at most one ``committed`` call per grace period).

        Why it is needed: a kill after a hop's commit and before ``dead_lettered`` leaves its
        link ``dead_lettering`` with nobody to process its record again; its followers
        would park until the link expired (days).
        """
        now = self._clock.monotonic()
        if now - self._checked_at < UNCONFIRMED_GRACE_S:
            return
        self._checked_at = now
        with self._unconfirmed_lock:
            for noted, (_, last) in list(self._unconfirmed.items()):
                if now - last > UNCONFIRMED_FORGET_S:
                    del self._unconfirmed[noted]
            due = [noted for noted, (first, _) in self._unconfirmed.items()
                   if now - first >= UNCONFIRMED_GRACE_S]
        if not due:
            return
        try:
            offsets = committed(sorted({(hop.topic, hop.partition) for _, _, hop in due}))
        except BrokerError as exc:
            LOG.debug("could not read committed offsets to confirm dead letters: %s", exc)
            return
        for key, event_id, hop in due:
            if offsets.get((hop.topic, hop.partition), -1) > hop.offset:
                # Most links noted were marked as usual since (the hop took a moment): only
                # one still unmarked is a crash's leftover.
                if any(link.event_id == event_id and link.state == "dead_lettering"
                       and link.hop == hop for link in self._store.chains([key]).get(key, ())):
                    self._store.confirm_dead_letter(key, event_id, hop, hold=self.policy.hold)
                    LOG.info("a dead letter's hop is durable though its link was not marked "
                             "(a crash after its commit): its followers go on")
                with self._unconfirmed_lock:
                    self._unconfirmed.pop((key, event_id, hop), None)

    def join(self, record: InboundRecord, topic: str, state: LinkState = "waiting") -> None:
        """Put ``record``'s event in its key's chain, waiting in ``topic`` (store write);
        ``dead_lettering`` notes the record as the source of the DLQ hop it waits for."""
        if record.key is None or not record.event_id:
            return
        link = Link(event_id=record.event_id, topic=topic, parked_at_ms=self._clock.now_ms(),
                    state=state, origin=origin_of(record), hop=hop_of(record, state))
        self._store.join(entity_key(record.key), link)
        record.chained = True

    def settle(self, fates: Iterable[Fate]) -> None:
        """Delivered chained events leave their chains: called once their outcomes are
        durable (a store write per chained record; there are few). A duplicate of a delivered
        event that is still linked is cleaned up by the next ``view`` of its key."""
        for fate in fates:
            record = fate.record
            if fate.kind == "delivered" and record.chained and record.key is not None \
                    and record.event_id:
                self._store.leave(entity_key(record.key), record.event_id)
                record.chained = False

    def dead_lettered(self, fate: Republished) -> None:
        """A chained record's DLQ hop is durable (committed, or acknowledged): its link,
        ``dead_lettering`` since before the hop was handed over, is ``dead_lettered`` now
        under ``hold`` (its followers may follow); it leaves under ``release``."""
        record = fate.record
        if not record.chained or record.key is None or not record.event_id or \
                not isinstance(fate.destination, DeadLetter):
            return
        hop = Position(record.topic, record.partition, record.offset)
        self._store.confirm_dead_letter(entity_key(record.key), record.event_id, hop,
                                        hold=self.policy.hold)
        if not self.policy.hold:
            record.chained = False


class ChunkChains:
    """The chains of one chunk's keys, kept current as the chunk's records are decided."""

    __slots__ = ("_chains", "_order", "active")

    def __init__(self, order: EntityOrder, chains: dict[str, list[Link]]) -> None:
        self._order = order
        self._chains = chains
        # Whether any key of the chunk has a chain: while none has, the processor asks
        # nothing per record (a plain attribute, read on the hot path).
        self.active = bool(chains)

    def place(self, record: InboundRecord) -> Placement:
        """Where ``record`` goes (``retry_topics.ordering.place``); notes whether it is
        chained, so its fate later leaves the chain."""
        if not self._chains or record.key is None or not record.event_id:
            return PROCEED
        chain = self._chains.get(entity_key(record.key))
        if not chain:
            return PROCEED
        if any(link.event_id == record.event_id for link in chain):
            record.chained = True
        return place(chain, record.event_id, hold=self._order.policy.hold,
                     origin=origin_of(record))

    def done(self, record: InboundRecord) -> None:
        """``record`` was delivered: later records of its key in this chunk no longer wait
        for it (the store hears of it once the outcome is durable)."""
        if self._chains and record.key is not None and record.event_id:
            key = entity_key(record.key)
            if key in self._chains:
                self._chains[key] = left(self._chains[key], record.event_id)

    def join(self, record: InboundRecord, topic: str, state: LinkState = "waiting") -> None:
        """``EntityOrder.join``, and the same change to this chunk's view."""
        self._order.join(record, topic, state)
        if record.key is not None and record.event_id:
            key = entity_key(record.key)
            link = Link(event_id=record.event_id, topic=topic, parked_at_ms=0, state=state,
                        origin=origin_of(record), hop=hop_of(record, state))
            self._chains[key] = joined(self._chains.get(key, []), link)
            self.active = True


def origin_of(record: InboundRecord) -> Position:
    """Where ``record``'s event first entered the main topic: its provenance headers
    (``clinic.original-*``, set on its first hop and kept on every later one, parked moves
    and DLQ replays included), or, on a record that never hopped, its own position."""
    provenance = record.headers.provenance
    if provenance is not None:
        return Position(provenance.topic, provenance.partition, provenance.offset)
    return Position(record.topic, record.partition, record.offset)


def hop_of(record: InboundRecord, state: LinkState) -> Position | None:
    """For a ``dead_lettering`` link, ``record``'s own position: its DLQ hop's source."""
    if state != "dead_lettering":
        return None
    return Position(record.topic, record.partition, record.offset)

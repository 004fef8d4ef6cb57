"""Outcomes decided by the lanes and not yet durable, seen by every lookup meanwhile.

Recording each lane's chunk separately cost one fsync'd transaction per lane per batch; the
poll thread instead records every delivered outcome of a service pass in one write, and only
then stores the records' offsets (so "recorded before committed" still holds). Between a
lane's delivery and that write, the event id is *staged*: lookups see it as delivered, so a
second copy of the event (same id, same key, same lane) is never handed to the handler.

Lookups read the staged set *before* the store: an id leaves the staged set only after the
store has it, so a lookup concurrent with a write sees the id in one place or the other.

**Lingering deliveries.** The poll thread records once per pass, and a pass can wait: the
poll thread may be making a handler call itself (quick work runs there), or committing a
transaction. So a ``LingerWatch`` thread records every delivery still staged one tick
(``LINGER_S``) after it was first seen there; the poll thread's own write then skips it. An
outcome is thus durable within about a tenth of a second of its call, whatever the next call
does, and a kill makes the downstream see again only the calls of that last moment.

Dead-lettered outcomes are staged the same way, from the moment a lane sends an event to the
DLQ until the broker's ack (or the commit of its transaction) lets the poll thread record
it: without that, a second copy of
the event consumed meanwhile (published twice, or redelivered after a rebalance) met no
outcome, was handed to the handler again and dead-lettered a second time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence

from consumer.dedup.store import DedupStore, Outcome

LOG = logging.getLogger("clinic_events.runner")
LINGER_S = 0.05


class PendingOutcomes:
    """A dedup store plus the delivered outcomes not yet written to it."""

    def __init__(self, store: DedupStore) -> None:
        self.store = store
        self._staged: set[str] = set()
        self._dead_lettered: set[str] = set()  # sent to the DLQ, not acknowledged yet
        self._lock = threading.Lock()
        # Deliveries written by ``record_lingering`` that the poll thread has not written
        # yet (it skips them), and the staged ids the last ``record_lingering`` saw.
        self._written_early: set[str] = set()
        self._seen: set[str] = set()
        self._write_lock = threading.Lock()  # one writer of deliveries at a time

    def lookup(self, event_ids: Sequence[str]) -> dict[str, Outcome]:
        """Recorded or staged outcomes of ``event_ids``.

        A staged delivery wins over anything recorded (delivered is final); a staged dead
        letter only stands where nothing is recorded.
        """
        with self._lock:
            staged = [eid for eid in event_ids if eid in self._staged] if self._staged else []
            dead = [eid for eid in event_ids if eid in self._dead_lettered] \
                if self._dead_lettered else []
        found = dict(self.store.lookup(event_ids))
        for event_id in dead:
            found.setdefault(event_id, "dead_lettered")
        for event_id in staged:
            found[event_id] = "delivered"
        return found

    def stage(self, event_ids: Collection[str]) -> None:
        """Note events delivered by a lane whose outcome is not yet durable."""
        if event_ids:
            with self._lock:
                self._staged.update(event_ids)

    def stage_one(self, event_id: str) -> None:
        """``stage`` for one event, as each call finishes (a set add is atomic under the GIL;
        ``lookup`` and the writers take the lock for consistent snapshots)."""
        self._staged.add(event_id)

    def record_delivered(self, event_ids: Sequence[str]) -> None:
        """Write staged outcomes durably (one write), then unstage them; raises on failure."""
        if not event_ids:
            return
        with self._write_lock:
            fresh = event_ids
            if self._written_early:
                fresh = [eid for eid in event_ids if eid not in self._written_early]
                self._written_early.difference_update(event_ids)
            if fresh:
                self.store.record_delivered(fresh)
        with self._lock:
            self._staged.difference_update(event_ids)

    def record_lingering(self) -> None:
        """Write the deliveries staged since the last call and still staged (one write)."""
        with self._write_lock:
            with self._lock:
                lingering = [eid for eid in self._seen if eid in self._staged]
                self._seen = set(self._staged)
            if not lingering:
                return
            self.store.record_delivered(lingering)
            self._written_early.update(lingering)
            with self._lock:
                self._staged.difference_update(lingering)

    def stage_dead_lettered(self, event_id: str) -> None:
        """Note an event sent to the DLQ whose acknowledgement has not arrived yet."""
        with self._lock:
            self._dead_lettered.add(event_id)

    def record_dead_lettered(self, event_id: str) -> None:
        """Write the acknowledged dead letter durably, then unstage it; raises on failure."""
        self.store.record(event_id, "dead_lettered")
        with self._lock:
            self._dead_lettered.discard(event_id)

    def unstage_dead_lettered(self, event_id: str) -> None:
        """Forget a dead letter that was never sent (its partition was lost meanwhile): the
        partition's next owner decides the event's fate afresh."""
        with self._lock:
            self._dead_lettered.discard(event_id)


class LingerWatch:
    """A daemon thread calling ``record_lingering`` every ``LINGER_S`` until stopped."""

    def __init__(self, outcomes: PendingOutcomes, every_s: float = LINGER_S) -> None:
        self._outcomes = outcomes
        self._every_s = every_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="linger-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _watch(self) -> None:
        while not self._stopped.wait(self._every_s):
            try:
                self._outcomes.record_lingering()
            except Exception as exc:  # noqa: BLE001 - the poll thread's own write reports it
                LOG.debug("could not record lingering deliveries: %s", exc)

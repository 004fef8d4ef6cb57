"""Worker threads with per-key order: bounded concurrency, one record of a key at a time.

A record's key (the entity it is about) is its lane: the records of one key are processed
one at a time, in consumption order, while up to ``count`` keys are processed at once. The
workers share the waiting work: a free worker takes the oldest records whose keys no other
worker holds. Why shared, not a thread per hash of the key: with fixed lanes, one lane still
worked through its queue at the end of a backlog while the others sat idle (a fifth of the
calls a 20 ms downstream could take were lost that way). Results go back on one queue the
poll thread drains; a worker that hits an unexpected error reports it and stops, so the
runner can shut down without storing offsets for unfinished records.

**Retry records first.** A retry record reaches the workers only once it is due, and must
not wait behind first attempts queued before it: a key whose next record is a retry is taken
before any key whose next record is a first attempt. Per-key order is not at stake: a
retried event is already behind the later events of its key.

**Small takes, early reports.** A worker takes about ``TAKE_S`` of work at the recent pace:
one record when the downstream is slow, up to ``INLINE_SLICE`` when it is quick. So work
spreads over every worker and a slow call holds up no other key. A worker hands back each
fate as soon as it is decided, so an outcome never waits for the next call of its take.

**Caller runs quick work.** Threads only pay off while handlers wait (on HTTP, say): under
the GIL, waking a worker for a batch of fast, CPU-only work costs more than the work. So
when no worker has anything, waiting or running, and the recent pace is under
``QUICK_RECORD_S`` per record, the poll thread processes the batch itself for at most
``CALLER_BUDGET_S`` and leaves the rest to the workers. The pace is measured wherever work
runs, so a downstream that turns slow moves work to the workers from the next batch on (the
poll thread waits out at most one slow call), and one that turns quick again brings it back
once the workers are idle. ``in_flight_limit`` tells the runner how many records to let in:
about ``QUEUED_WORK_S`` of work at the recent pace (a slower sample is taken at once, a
quicker one gradually), so a slow downstream never builds minutes of queued work ahead of a
due retry or a shutdown.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from consumer.pipeline.records import Fate, InboundRecord

ChunkProcessor = Callable[[Sequence[InboundRecord]], list[Fate]]


class BoundedChunkProcessor(Protocol):
    """Processes a prefix of a chunk, stopping after the first record that ends past the
    deadline (``time.monotonic`` scale); returns the fates and the prefix's length. Only a
    caller that ``may_wait`` gets quick retries that sleep (see ``RecordProcessor``)."""

    def __call__(self, records: Sequence[InboundRecord], deadline: float | None, /, *,
                 may_wait: bool = False) -> tuple[list[Fate], int]: ...


QUICK_RECORD_S = 200e-6
CALLER_BUDGET_S = 0.010  # two GIL switch intervals: a batch preempted once still fits
INLINE_SLICE = 64
TAKE_S = 0.05  # a worker's take: about this much work, so it reports at least this often
QUEUED_WORK_S = 1.0  # in-flight work the runner lets build up, at the recent pace
PACE_DECAY = 0.3  # weight of a quicker pace sample (a slower one is taken at once)


@dataclass(frozen=True, slots=True)
class LaneFailure:
    """A lane died on an unexpected error; its chunk's records are not done."""

    error: BaseException


LaneResult = list[Fate] | LaneFailure


class RecentPace:
    """Seconds per record lately, and how many records that makes ``QUEUED_WORK_S`` of work.

    A slower sample is taken at once (a downstream turning slow must shrink the work let in
    before minutes of it queue up), a quicker one gradually. Written by lane threads and
    the poll thread alike: a float, so a lost update only delays the estimate by a chunk.
    """

    def __init__(self) -> None:
        self.seconds = 0.0  # 0.0: nothing measured yet

    def note(self, seconds_per_record: float) -> None:
        pace = self.seconds
        self.seconds = seconds_per_record if seconds_per_record > pace else \
            pace + PACE_DECAY * (seconds_per_record - pace)

    def limit(self, workers: int, ceiling: int, floor: int) -> int:
        """Records that ``workers`` get through in ``QUEUED_WORK_S``, within the bounds."""
        if self.seconds <= 0.0:
            return ceiling
        return max(floor, min(ceiling, int(workers * QUEUED_WORK_S / self.seconds)))


class InlineLane:
    """``delivery.concurrency = 1``: the poll thread processes each batch itself.

    One event at a time, in order, with no thread hand-off (which costs tens of microseconds
    per event on a small machine). For fast, CPU-only Python handlers; a slow handler here
    delays polling itself, so keep a call well under ``max.poll.interval.ms`` / batch size.
    """

    def __init__(self, process: ChunkProcessor, abandon: Callable[[], None] | None = None) -> None:
        self._process = process
        self._abandon = abandon
        self._pace = RecentPace()
        self.results: queue.SimpleQueue[LaneResult] = queue.SimpleQueue()

    def dispatch(self, records: Sequence[InboundRecord]) -> None:
        """Process ``records`` now, in slices (a slice's decoded events stay in cache)."""
        try:
            for start in range(0, len(records), INLINE_SLICE):
                chunk = records[start:start + INLINE_SLICE]
                began = time.monotonic()
                self.results.put(self._process(chunk))
                self._pace.note((time.monotonic() - began) / len(chunk))
        except Exception as exc:  # noqa: BLE001 - reported like a lane failure
            self.results.put(LaneFailure(exc))

    def stop(self, timeout_s: float = 30.0, *, discard_pending: bool = True) -> None:
        """Nothing runs in the background: nothing to stop."""

    def discard_pending(self) -> None:
        """Start no further record of the batch being processed (``abandon``)."""
        if self._abandon is not None:
            self._abandon()

    def idle(self) -> bool:
        """Nothing runs in the background."""
        return True

    def in_flight_limit(self, ceiling: int) -> int:
        """How many records to take per batch: about ``QUEUED_WORK_S`` of work.

        Why: a batch is processed before the poll loop records outcomes or fetches due
        retries again, so with a slow handler a full batch would hold both up for minutes.
        Until a pace is known, one slice: a quick handler makes the next batch full size.
        """
        if self._pace.seconds <= 0.0:
            return min(ceiling, INLINE_SLICE)
        return self._pace.limit(1, ceiling, 1)


@dataclass(slots=True)
class _KeyWork:
    """The records of one key waiting for a worker, each with its place in consumption
    order: retry records first, then the rest."""

    retries: deque[tuple[int, InboundRecord]]
    firsts: deque[tuple[int, InboundRecord]]

    def head(self) -> tuple[int, int] | None:
        """(0 for a retry record, 1 for a first attempt; its place) of the next record."""
        if self.retries:
            return 0, self.retries[0][0]
        if self.firsts:
            return 1, self.firsts[0][0]
        return None


class Lanes:
    """``count`` worker threads sharing the waiting work, one record of a key at a time."""

    def __init__(self, count: int, process: ChunkProcessor,
                 process_until: BoundedChunkProcessor | None = None,
                 abandon: Callable[[], None] | None = None) -> None:
        self._count = count
        self._process = process
        self._process_until = process_until
        self._abandon = abandon  # makes running work start no further record
        self._changed = threading.Condition()
        # Guarded by ``_changed``: waiting records by key, keys a worker holds, and a heap
        # of (priority, place, key) of each key's next record, for keys no worker holds
        # (an entry whose key was taken since, or whose next record changed, is skipped).
        self._waiting: dict[bytes, _KeyWork] = {}
        self._held: set[bytes] = set()
        self._ready: list[tuple[int, int, bytes]] = []
        self._records_waiting = 0
        self._stopping = False
        self._sequence = itertools.count()
        self._pace = RecentPace()
        self.results: queue.SimpleQueue[LaneResult] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"lane-{i}", daemon=True)
                         for i in range(count)]
        for thread in self._threads:
            thread.start()

    def dispatch(self, records: Sequence[InboundRecord]) -> None:
        """Hand a batch over, in consumption order; run it here while work is quick."""
        if self._process_until is not None and self.idle() and \
                self._pace.seconds < QUICK_RECORD_S:
            records = self._run_here(self._process_until, records)
        if records:
            self._enqueue(records)

    def _run_here(self, process_until: BoundedChunkProcessor,
                  records: Sequence[InboundRecord]) -> Sequence[InboundRecord]:
        """Process ``records`` on the calling thread, in slices (a slice's decoded events stay
        in cache), while they run at the quick pace; return what is left for the workers.

        The time allowed is the batch at the quick pace, at least ``CALLER_BUDGET_S``: past
        it, the record in progress is the last one run here.
        """
        started = time.monotonic()
        deadline = started + max(CALLER_BUDGET_S, len(records) * QUICK_RECORD_S)
        done = 0
        try:
            while done < len(records):
                chunk = records[done:done + INLINE_SLICE]
                fates, ran = process_until(chunk, deadline)
                self.results.put(fates)
                done += ran
                if ran < len(chunk):
                    break  # past the deadline, or a record handed over for quick retries
        except Exception as exc:  # noqa: BLE001 - reported like a worker failure
            self.results.put(LaneFailure(exc))
            return ()
        self._pace.note((time.monotonic() - started) / max(done, 1))
        return records[done:]

    def _enqueue(self, records: Sequence[InboundRecord]) -> None:
        with self._changed:
            for record in records:
                # key-less records are independent of each other
                key = record.key or f"{record.partition}:{record.offset}".encode()
                work = self._waiting.get(key)
                if work is None:
                    work = self._waiting[key] = _KeyWork(deque(), deque())
                was = work.head()
                place = next(self._sequence)
                (work.retries if record.attempt > 1 else work.firsts).append((place, record))
                head = work.head()
                if key not in self._held and head != was and head is not None:
                    heapq.heappush(self._ready, (*head, key))
            self._records_waiting += len(records)
            self._changed.notify(len(records))

    def _take(self) -> list[tuple[bytes, list[InboundRecord]]]:
        """Up to a take's worth of waiting records, whole keys' runs, oldest key first
        (keys whose next record is a retry before all others). Called holding the lock."""
        size = INLINE_SLICE if self._pace.seconds <= 0.0 else \
            max(1, min(INLINE_SLICE, int(TAKE_S / self._pace.seconds)))
        taken: list[tuple[bytes, list[InboundRecord]]] = []
        count = 0
        while self._ready and count < size:
            priority, place, key = heapq.heappop(self._ready)
            work = self._waiting.get(key)
            if key in self._held or work is None or work.head() != (priority, place):
                continue  # stale: taken since, or its next record changed
            run: list[InboundRecord] = []
            for source in (work.retries, work.firsts):
                while source and count < size:
                    run.append(source.popleft()[1])
                    count += 1
            self._held.add(key)
            taken.append((key, run))
        self._records_waiting -= count
        return taken

    def _release(self, taken: list[tuple[bytes, list[InboundRecord]]]) -> None:
        """Give the keys of a finished take back; those with waiting records become ready."""
        with self._changed:
            for key, _ in taken:
                self._held.discard(key)
                work = self._waiting[key]
                head = work.head()
                if head is not None:
                    heapq.heappush(self._ready, (*head, key))
                else:
                    del self._waiting[key]
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._stopping and not self._ready:
                    self._changed.wait()
                if self._stopping and not self._ready:
                    return
                taken = self._take()
            if not taken:
                continue
            try:
                self._run([record for _, run in taken for record in run])
            except BaseException as exc:  # noqa: BLE001 - reported to the poll thread
                self.results.put(LaneFailure(exc))
                self._release(taken)
                return
            self._release(taken)

    def _run(self, records: list[InboundRecord]) -> None:
        """Process a take one record at a time, handing back each fate as it is decided.

        Why one at a time: the next record's call may be slow (a downstream turning slow,
        one event taking seconds), and a fate held back until then is an outcome neither
        recorded nor committed; a crash meanwhile would hand the delivered event to the
        downstream again. The poll thread records the fates it gathers in one write a pass.
        """
        process_until = self._process_until
        if process_until is None:
            self.results.put(self._process(records))
            return
        for record in records:
            started = time.monotonic()
            fates, done = process_until((record,), None, may_wait=True)
            if fates:
                self.results.put(fates)
            if done == 0:
                return  # abandoned (a second stop signal): start no further record
            self._pace.note(time.monotonic() - started)

    def in_flight_limit(self, ceiling: int) -> int:
        """How many records the runner should let be in flight: ``QUEUED_WORK_S`` of work.

        At the recent pace, with every worker busy, at most ``ceiling`` and at least two per
        worker. Why: with a slow downstream, thousands of queued first attempts would hold
        up a due retry record (and a drain at shutdown) for minutes; with quick handlers the
        ceiling binds.
        """
        return self._pace.limit(self._count, ceiling, 2 * self._count)

    def discard_pending(self) -> None:
        """Drop the records no worker has taken, and stop running takes after their current
        record. Their offsets are never stored, so they are redelivered after a restart."""
        with self._changed:
            self._waiting = {key: work for key, work in self._waiting.items()
                             if key in self._held}
            for work in self._waiting.values():
                work.retries.clear()
                work.firsts.clear()
            self._ready.clear()
            self._records_waiting = 0
        if self._abandon is not None:
            self._abandon()

    def idle(self) -> bool:
        """No record is waiting for a worker or being processed by one."""
        with self._changed:
            return not self._records_waiting and not self._held

    def stop(self, timeout_s: float = 30.0, *, discard_pending: bool = True) -> None:
        """End the workers; records not taken yet are dropped unless asked otherwise.

        Dropping is safe: their offsets were never stored, so they are redelivered.
        """
        if discard_pending:
            with self._changed:
                self._ready.clear()
                self._records_waiting = 0
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)

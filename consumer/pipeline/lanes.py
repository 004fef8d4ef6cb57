"""Worker lanes: bounded concurrency with strict per-key order.

A record's key (the entity it is about) picks its lane by hash, and each lane is one thread
working through a FIFO of chunks. So two records with the same key are never in flight at
once and are processed in consumption order, while up to ``len(lanes)`` different keys are
processed concurrently. The poll thread hands each lane one chunk per consume batch, which
keeps the hand-off cost per record small. Results go back on one queue the poll thread
drains; a lane that hits an unexpected error reports it and stops, so the runner can shut
down without storing offsets for unfinished records.

**Caller runs quick work.** Threads only pay off while handlers wait (on HTTP, say): under
the GIL, waking a lane for a chunk of fast, CPU-only work costs more than the work (measured
here: the pipeline's own cost per event doubled). So while chunks run at under
``QUICK_RECORD_S`` per record (decoding included), the poll thread processes a lane's chunk
itself, provided that lane has nothing queued or running (so per-key order holds), within a
budget of ``CALLER_BUDGET_S``: it stops after the first record that ends past the budget
and hands the rest to the lane's thread. After ``SLOW_RUNS_TO_LEAVE`` slow runs in a row it
leaves work to the threads until it tries again after a probe interval: ``FIRST_PROBE_S``,
doubled after each probe that finds work still slow, up to ``LAST_PROBE_S`` (a stray slow
chunk, from a GC pause or a busy core, costs little).

**A slow handler call is left to the threads at once.** A run that took longer than
``LONG_RUN_S`` (at least one call far past the budget: a slow or hanging downstream, not
a GC pause or a preemption) hands work to the threads without waiting for more slow runs;
otherwise one dispatch could run several such calls on the poll thread back to back, and
retry partitions would resume late by that much. And the poll thread probes again only
when the lanes have shown no slowness for ``PROBE_QUIET_S``: no chunk that took
``SLOW_CHUNK_S`` or more, or ``SLOW_PACE_S`` or more per record, finished in that time, and
none has been running that long. One fast chunk is no evidence: with a downstream slow for
some events only, the chunk that finished last is as often a quick one. So while the
downstream stays slow, even in part, no probe makes the poll thread call it: the poll thread
waits out at most one slow handler call each time the downstream turns slow.

**Slow work stays short and reports early.** A lane thread hands back fates at least every
``REPORT_EVERY_S`` (plus one call), so outcomes are recorded and offsets stored as calls
finish rather than when a long chunk ends. A lane takes queued chunks of retry records
before queued first attempts, and a chunk of first attempts steps aside between two reports
when a retry chunk arrives. ``in_flight_limit`` tells the runner how many records to let in:
about ``QUEUED_WORK_S`` of work at the recent pace (a slower sample is taken at once, a
quicker one gradually), so a slow downstream never builds minutes of queued work ahead of a
due retry or a shutdown.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import zlib
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
CALLER_BUDGET_S = 0.010  # two GIL switch intervals: a chunk preempted once still fits
SLOW_RUNS_TO_LEAVE = 3  # in a row: one slow run is as often a GC pause or a busy core
LONG_RUN_S = 2 * CALLER_BUDGET_S  # a run this long: a slow call, left to the threads at once
SLOW_CHUNK_S = 0.1  # a lane chunk this long holds a slow call (31 quick records take ~2 ms)
SLOW_PACE_S = CALLER_BUDGET_S  # or this long per record
PROBE_QUIET_S = 3.2  # probe only after this long without a slow lane chunk
FIRST_PROBE_S, LAST_PROBE_S = 0.05, 3.2
INLINE_SLICE = 64
REPORT_EVERY_S = 0.05  # a lane thread hands back its fates at least this often (+ one call)
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


class Lanes:
    """N threads, each owning a FIFO of record chunks; the caller runs quick work itself."""

    def __init__(self, count: int, process: ChunkProcessor,
                 process_until: BoundedChunkProcessor | None = None,
                 abandon: Callable[[], None] | None = None) -> None:
        self._process = process
        self._process_until = process_until
        self._abandon = abandon  # makes running chunks start no further record
        self._discard = False
        # Chunks queued or running per lane: the poll thread adds, the lane subtracts.
        self._backlog = [0] * count
        self._retries_queued = [0] * count  # of those, chunks of retry records
        self._backlog_lock = threading.Lock()
        self._quick = process_until is not None
        self._probe_at = 0.0  # when, if not quick, the caller tries running work again
        self._probe_interval = FIRST_PROBE_S
        self._slow_runs = 0
        # Written by the lane threads, read by the caller (floats: no lock needed): when a
        # slow chunk last finished, and when each lane's running chunk started (0.0: idle).
        self._slow_chunk_at = float("-inf")
        self._started_at = [0.0] * count
        self._pace = RecentPace()
        self.results: queue.SimpleQueue[LaneResult] = queue.SimpleQueue()
        # (0 for retry records, 1 for first attempts; sequence; chunk or None to stop)
        self._queues: list[queue.PriorityQueue[
            tuple[int, int, Sequence[InboundRecord] | None]]] = [
            queue.PriorityQueue() for _ in range(count)
        ]
        self._enqueued = itertools.count()  # FIFO among chunks of one priority
        self._threads = [
            threading.Thread(target=self._work, args=(i, q), name=f"lane-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    def dispatch(self, records: Sequence[InboundRecord]) -> None:
        """Hand a batch to the lanes: one chunk per lane, consumption order kept.

        A record's lane is the CRC32 of its key, or of partition:offset for key-less records.
        """
        chunks: dict[int, list[InboundRecord]] = {}
        lanes = len(self._queues)
        crc32 = zlib.crc32
        for record in records:
            key = record.key if record.key else f"{record.partition}:{record.offset}".encode()
            # retry records (attempt > 1) are chunked apart: a lane thread takes them first
            lane = crc32(key) % lanes if record.attempt == 1 else crc32(key) % lanes + lanes
            chunk = chunks.get(lane)
            if chunk is None:
                chunk = chunks[lane] = []
            chunk.append(record)
        process_until = self._process_until
        probing = False
        if not self._quick and process_until is not None:
            now = time.monotonic()
            if now >= self._probe_at:
                if not self._lanes_slow(now):
                    self._quick = probing = True  # the budget bounds what a slow call costs
                else:  # the lanes are still slow: probing would only wait on the downstream
                    self._probe_at = now + self._probe_interval
        # retry chunks first (slots from ``lanes`` on), first attempts in their order
        for slot, chunk in sorted(chunks.items(), key=lambda item: item[0] < lanes):
            lane = slot % lanes
            if process_until is not None and self._quick and self._backlog[lane] == 0:
                self._run_here(process_until, lane, chunk)
            else:
                self._enqueue(lane, chunk, retry=slot >= lanes)
        if probing and self._quick:
            self._probe_interval = FIRST_PROBE_S  # quick again: the next slip is forgiven fast

    def _lanes_slow(self, now: float) -> bool:
        """A lane chunk was slow within ``PROBE_QUIET_S``, or one has been running that long."""
        if now - self._slow_chunk_at < PROBE_QUIET_S:
            return True
        return any(started and now - started >= SLOW_CHUNK_S for started in self._started_at)

    def _run_here(self, process_until: BoundedChunkProcessor, lane: int,
                  chunk: list[InboundRecord]) -> None:
        """Process ``chunk`` on the calling thread within the budget; queue what is left."""
        started = time.monotonic()
        try:
            fates, done = process_until(chunk, started + CALLER_BUDGET_S)
        except Exception as exc:  # noqa: BLE001 - reported like a lane failure
            self._leave_to_threads()
            self.results.put(LaneFailure(exc))
            return
        self.results.put(fates)
        elapsed = time.monotonic() - started
        self._pace.note(elapsed / max(done, 1))
        if elapsed > LONG_RUN_S:
            self._leave_to_threads()
        elif done < len(chunk) or elapsed > done * QUICK_RECORD_S:
            self._slow_runs += 1
            if self._slow_runs >= SLOW_RUNS_TO_LEAVE:
                self._leave_to_threads()
        else:
            self._slow_runs = 0
        if done < len(chunk):
            self._enqueue(lane, chunk[done:], retry=chunk[0].attempt > 1)

    def _leave_to_threads(self) -> None:
        self._slow_runs = 0
        if not self._quick:
            return
        self._quick = False
        self._probe_at = time.monotonic() + self._probe_interval
        self._probe_interval = min(self._probe_interval * 2, LAST_PROBE_S)

    def _enqueue(self, lane: int, chunk: Sequence[InboundRecord], *, retry: bool) -> None:
        """Queue ``chunk`` on ``lane``; a chunk of retry records goes before first attempts.

        Why first: a retry record reaches the lanes only once it is due, and first attempts
        queued before it could hold it up for many handler calls when the downstream is
        slow. Per-key order is not at stake: a retried event is already behind the later
        events of its key, and both kinds stay in order among themselves.
        """
        with self._backlog_lock:
            self._backlog[lane] += 1
            if retry:
                self._retries_queued[lane] += 1
        self._queues[lane].put((0 if retry else 1, next(self._enqueued), chunk))

    def in_flight_limit(self, ceiling: int) -> int:
        """How many records the runner should let be in flight: ``QUEUED_WORK_S`` of work.

        At the recent pace, with every lane busy, at most ``ceiling`` and at least two per
        lane. Why: with a slow downstream, thousands of queued first attempts would hold up
        a due retry record (and a drain at shutdown) for minutes; with quick handlers the
        ceiling binds as before.
        """
        lanes = len(self._queues)
        return self._pace.limit(lanes, ceiling, 2 * lanes)

    def discard_pending(self) -> None:
        """Drop the chunks not started yet, and stop running ones after their current record.

        Their records' offsets are never stored, so they are redelivered after a restart.
        """
        self._discard = True
        if self._abandon is not None:
            self._abandon()

    def idle(self) -> bool:
        """No chunk is queued or running on any lane thread."""
        with self._backlog_lock:
            return not any(self._backlog)

    def stop(self, timeout_s: float = 30.0, *, discard_pending: bool = True) -> None:
        """End the threads; chunks not yet started are dropped unless asked otherwise.

        Dropping is safe: their offsets were never stored, so they are redelivered.
        """
        self._discard = discard_pending
        for lane_queue in self._queues:
            lane_queue.put((2, next(self._enqueued), None))  # after every queued chunk
        for thread in self._threads:
            thread.join(timeout_s)

    def _work(self, lane: int, lane_queue: queue.PriorityQueue[
            tuple[int, int, Sequence[InboundRecord] | None]]) -> None:
        while True:
            priority, sequence, chunk = lane_queue.get()
            if chunk is None:
                return
            retry = priority == 0
            if retry:
                with self._backlog_lock:
                    self._retries_queued[lane] -= 1
            if self._discard:
                self._done(lane)
                continue
            started = self._started_at[lane] = time.monotonic()
            try:
                rest = self._run_chunk(lane, chunk, yield_to_retries=not retry)
            except BaseException as exc:  # noqa: BLE001 - reported to the poll thread
                self.results.put(LaneFailure(exc))
                return
            finished = time.monotonic()
            self._started_at[lane] = 0.0
            took, ran = finished - started, len(chunk) - len(rest)
            if took >= SLOW_CHUNK_S or took >= SLOW_PACE_S * ran:
                self._slow_chunk_at = finished
            self._pace.note(took / max(ran, 1))
            if rest:  # a retry chunk came in: it runs first, then the rest in its old place
                lane_queue.put((priority, sequence, rest))
            else:
                self._done(lane)

    def _run_chunk(self, lane: int, chunk: Sequence[InboundRecord], *,
                   yield_to_retries: bool) -> Sequence[InboundRecord]:
        """Process ``chunk`` on a lane thread, handing back fates every ``REPORT_EVERY_S``.

        Why not once at the end: with a slow downstream a chunk takes seconds, and until
        its fates are back their outcomes are neither recorded nor logged nor committed; a
        crash meanwhile would hand every event of it that the downstream had already
        accepted to the handler again. For the same reason a chunk of first attempts
        ``yield_to_retries``: it stops between two reports when a retry chunk is queued on
        its lane, and returns what it did not process.
        """
        process_until = self._process_until
        if process_until is None:
            self.results.put(self._process(chunk))
            return ()
        rest = chunk
        while rest:
            fates, done = process_until(rest[:INLINE_SLICE], time.monotonic() + REPORT_EVERY_S,
                                        may_wait=True)
            if fates:
                self.results.put(fates)
            if done == 0:
                return ()  # abandoned (a second stop signal): start no further record
            rest = rest[done:]
            if rest and yield_to_retries and self._retries_queued[lane]:
                return rest
        return ()

    def _done(self, lane: int) -> None:
        with self._backlog_lock:
            self._backlog[lane] -= 1


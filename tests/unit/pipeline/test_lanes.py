"""Worker lanes: same key never concurrent and in order; work spreads over every worker;
the caller runs quick work; failures are reported."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Sequence

from consumer.pipeline.lanes import (
    CALLER_BUDGET_S,
    INLINE_SLICE,
    QUEUED_WORK_S,
    QUICK_RECORD_S,
    BoundedChunkProcessor,
    InlineLane,
    LaneFailure,
    Lanes,
)
from consumer.pipeline.records import Delivered, Fate, InboundRecord
from retry_topics.headers import RecordHeaders


def _record(key: bytes, offset: int, attempts: int | None = None) -> InboundRecord:
    """A record of topic attempt 1, or ``attempts + 1`` (a retry tier's record)."""
    return InboundRecord(topic="t", partition=0, offset=offset, timestamp_ms=None, key=key,
                         value=b"", raw_headers=(),
                         decoded_headers=RecordHeaders(attempts=attempts), event=None)


def _collect(lanes: Lanes, count: int) -> list[Fate]:
    fates: list[Fate] = []
    deadline = time.monotonic() + 10
    while len(fates) < count and time.monotonic() < deadline:
        result = lanes.results.get(timeout=10)
        assert not isinstance(result, LaneFailure)
        fates.extend(result)
    return fates


def test_records_with_one_key_run_one_at_a_time_in_order() -> None:
    active: dict[bytes, int] = {}
    seen: list[tuple[bytes, int]] = []
    lock = threading.Lock()
    overlaps: list[bytes] = []

    def process(chunk: Sequence[InboundRecord]) -> list[Fate]:
        fates: list[Fate] = []
        for record in chunk:
            assert record.key is not None
            with lock:
                if active.get(record.key):
                    overlaps.append(record.key)
                active[record.key] = 1
                seen.append((record.key, record.offset))
            time.sleep(0.001)
            with lock:
                active[record.key] = 0
            fates.append(Delivered(record))
        return fates

    lanes = Lanes(4, process)
    keys = [b"a", b"b", b"c", b"d", b"e"]
    offset = 0
    for _ in range(5):  # several batches: order must hold across batches too
        batch = []
        for key in keys * 2:
            batch.append(_record(key, offset))
            offset += 1
        lanes.dispatch(batch)
    assert len(_collect(lanes, offset)) == offset
    lanes.stop()
    assert overlaps == []
    for key in keys:
        offsets = [o for k, o in seen if k == key]
        assert offsets == sorted(offsets)


def test_a_failing_lane_reports_the_error() -> None:
    def process(_chunk: Sequence[InboundRecord]) -> list[Fate]:
        raise RuntimeError("dedup store unreachable")

    lanes = Lanes(2, process)
    lanes.dispatch([_record(b"x", 0)])
    result = lanes.results.get(timeout=5)
    lanes.stop()
    assert isinstance(result, LaneFailure)
    assert "unreachable" in str(result.error)


def test_inline_lane_processes_on_the_calling_thread_and_reports_failures() -> None:
    threads: list[str] = []

    def process(chunk: Sequence[InboundRecord]) -> list[Fate]:
        threads.append(threading.current_thread().name)
        if chunk[0].key == b"boom":
            raise RuntimeError("store down")
        return [Delivered(record) for record in chunk]

    lane = InlineLane(process)
    lane.dispatch([_record(b"a", 0), _record(b"b", 1)])
    lane.dispatch([_record(b"boom", 2)])
    lane.stop()
    first, second = lane.results.get_nowait(), lane.results.get_nowait()
    assert not isinstance(first, LaneFailure)
    assert [fate.record.offset for fate in first] == [0, 1]
    assert isinstance(second, LaneFailure)
    assert threads == [threading.current_thread().name] * 2


def _delivered_on(threads: list[str]) -> BoundedChunkProcessor:
    """A bounded processor that notes the thread it ran on and finishes every record."""
    def process_until(chunk: Sequence[InboundRecord],
                      _deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        threads.append(threading.current_thread().name)
        return [Delivered(record) for record in chunk], len(chunk)
    return process_until


def test_quick_work_runs_on_the_calling_thread() -> None:
    threads: list[str] = []
    lanes = Lanes(4, lambda chunk: [Delivered(r) for r in chunk], _delivered_on(threads))
    lanes.dispatch([_record(b"a", 0), _record(b"b", 1), _record(b"c", 2)])
    fates = _collect(lanes, 3)
    lanes.stop()
    assert sorted(f.record.offset for f in fates) == [0, 1, 2]
    assert set(threads) == {threading.current_thread().name}


def test_a_lane_with_queued_work_is_never_overtaken_by_the_caller() -> None:
    """Per-key order: while lane k has a chunk queued or running, new work queues behind it."""
    release = threading.Event()
    order: list[int] = []

    def process_until(chunk: Sequence[InboundRecord],
                      _deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        if may_wait and chunk[0].offset == 0:  # slow on the lane thread
            release.wait(10)
        order.extend(r.offset for r in chunk)
        return [Delivered(r) for r in chunk], len(chunk)

    lanes = Lanes(1, lambda chunk: [], process_until)
    lanes._pace.note(1.0)  # slow: the first record goes to the worker
    lanes.dispatch([_record(b"a", 0)])
    lanes._pace.seconds = 0.0  # quick again, but the key is busy: the next record must queue
    lanes.dispatch([_record(b"a", 1)])
    release.set()
    assert len(_collect(lanes, 2)) == 2
    lanes.stop()
    assert order == [0, 1]


def test_work_past_the_budget_goes_to_the_workers_and_comes_back_when_quick() -> None:
    """A slow call on the caller: the rest of the batch, and the next batches while the pace
    is slow, go to the workers; once quick samples bring the pace back and the workers are
    idle, the caller runs work again."""
    caller = threading.current_thread().name
    ran_on: list[tuple[str, int]] = []
    slow = {0}

    def process_until(chunk: Sequence[InboundRecord], _deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        first = chunk[0]
        if first.offset in slow:
            time.sleep(CALLER_BUDGET_S * 2)  # a slow call: the deadline passes
        ran_on.append((threading.current_thread().name, first.offset))
        return [Delivered(first)], 1

    lanes = Lanes(2, lambda chunk: [], process_until)
    lanes.dispatch([_record(b"a", 0), _record(b"a", 1)])
    assert len(_collect(lanes, 2)) == 2
    assert [(name == caller, o) for name, o in ran_on] == [(True, 0), (False, 1)]
    lanes.dispatch([_record(b"a", 2)])  # the pace is slow now: to the workers
    assert len(_collect(lanes, 1)) == 1
    assert ran_on[-1][0] != caller
    for _ in range(40):
        lanes._pace.note(QUICK_RECORD_S / 10)  # quick samples, as the workers would take
    lanes.dispatch([_record(b"a", 3)])
    assert len(_collect(lanes, 1)) == 1
    lanes.stop()
    assert ran_on[-1] == (caller, 3)


def test_one_slow_handler_call_leaves_the_rest_of_the_dispatch_to_the_workers() -> None:
    """A call far past the budget is a slow downstream: the caller runs no further record."""
    caller = threading.current_thread().name
    ran_on: list[tuple[str, bytes | None]] = []

    def process_until(chunk: Sequence[InboundRecord],
                      _deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        time.sleep(CALLER_BUDGET_S * 1.5)  # one slow handler call
        ran_on.append((threading.current_thread().name, chunk[0].key))
        return [Delivered(chunk[0])], 1

    lanes = Lanes(16, lambda chunk: [], process_until)
    keys = [bytes([k]) for k in range(64)]
    lanes.dispatch([_record(key, n) for n, key in enumerate(keys)])
    assert len(_collect(lanes, len(keys))) == len(keys)
    lanes.stop()
    on_caller = [key for name, key in ran_on if name == caller]
    assert len(on_caller) == 1, f"the caller waited out {len(on_caller)} slow calls"


def test_the_caller_runs_nothing_while_a_worker_is_in_a_call() -> None:
    """Per-key order and a hung downstream alike: work runs here only when every worker is
    idle."""
    caller = threading.current_thread().name
    release = threading.Event()
    ran_here: list[str] = []
    on_caller = _delivered_on(ran_here)

    def process_until(chunk: Sequence[InboundRecord], deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        if may_wait and chunk[0].key == b"hung":
            release.wait(10)
        return on_caller(chunk, deadline, may_wait=may_wait)

    lanes = Lanes(2, lambda chunk: [], process_until)
    lanes._pace.note(1.0)
    lanes.dispatch([_record(b"hung", 0)])
    _wait_until_taken(lanes)
    lanes._pace.seconds = 0.0  # quick, as far as the pace knows
    lanes.dispatch([_record(b"other", 1)])
    assert len(_collect(lanes, 1)) == 1
    release.set()
    assert len(_collect(lanes, 1)) == 1
    lanes.stop()
    assert caller not in ran_here


def test_distinct_keys_never_wait_for_each_other_while_a_worker_is_free() -> None:
    """Sixteen keys that a hash of the key would put in one lane of eight: with a slow
    downstream they run eight at a time, not one after another."""
    keys = [key for key in (f"k{n}".encode() for n in range(10_000))
            if zlib.crc32(key) % 8 == 0][:16]
    calls: list[float] = []
    lock = threading.Lock()

    def process_until(chunk: Sequence[InboundRecord], _deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        time.sleep(0.02)
        with lock:
            calls.append(time.monotonic())
        return [Delivered(chunk[0])], 1

    lanes = Lanes(8, lambda chunk: [], process_until)
    lanes._pace.note(0.02)  # a known slow pace: takes of one record
    started = time.monotonic()
    lanes.dispatch([_record(key, n) for n, key in enumerate(keys)])
    assert len(_collect(lanes, 16)) == 16
    lanes.stop()
    elapsed = max(calls) - started
    assert elapsed < 0.02 * 16 / 2, f"16 calls of 20 ms on 8 workers took {elapsed:.3f} s"


def _wait_until_taken(lanes: Lanes) -> None:
    deadline = time.monotonic() + 5
    while not lanes._held and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lanes._held, "a worker took the record"


def test_discard_pending_drops_queued_chunks_abandons_running_ones_and_ends_idle() -> None:
    """An operator's second stop signal: what has not started is left for redelivery."""
    release = threading.Event()
    processed: list[int] = []
    abandoned: list[bool] = []

    def process(chunk: Sequence[InboundRecord]) -> list[Fate]:
        release.wait(10)
        processed.extend(r.offset for r in chunk)
        return [Delivered(r) for r in chunk]

    lanes = Lanes(1, process, abandon=lambda: abandoned.append(True))
    lanes.dispatch([_record(b"a", 0)])
    _wait_until_taken(lanes)
    lanes.dispatch([_record(b"a", 1)])
    assert not lanes.idle()
    lanes.discard_pending()
    assert abandoned == [True]  # the running chunk starts no further record
    release.set()
    deadline = time.monotonic() + 5
    while not lanes.idle() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lanes.idle()
    lanes.stop()
    assert processed == [0]


def test_a_failure_on_the_calling_thread_is_reported_like_a_lane_failure() -> None:
    def process_until(_chunk: Sequence[InboundRecord],
                      _deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        raise RuntimeError("store down")

    lanes = Lanes(2, lambda chunk: [], process_until)
    lanes.dispatch([_record(b"x", 0)])
    result = lanes.results.get(timeout=5)
    lanes.stop()
    assert isinstance(result, LaneFailure)


def test_inline_lane_processes_a_batch_in_slices() -> None:
    sizes: list[int] = []

    def process(chunk: Sequence[InboundRecord]) -> list[Fate]:
        sizes.append(len(chunk))
        return [Delivered(record) for record in chunk]

    lane = InlineLane(process)
    lane.dispatch([_record(b"k", n) for n in range(INLINE_SLICE * 2 + 1)])
    assert sizes == [INLINE_SLICE, INLINE_SLICE, 1]


def test_a_lane_thread_hands_back_fates_before_its_chunk_is_done() -> None:
    """With a slow downstream a chunk takes seconds: outcomes must not wait for its end."""
    release = threading.Event()

    def process_until(chunk: Sequence[InboundRecord], _deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        if chunk[0].offset > 0:
            release.wait(10)  # every call after the first is slow
        return [Delivered(chunk[0])], 1  # one call took it past the report deadline

    lanes = Lanes(1, lambda chunk: [], process_until)
    lanes._pace.note(1.0)  # slow: to the worker, which takes all three (one key)
    lanes._pace.seconds = 0.001
    lanes.dispatch([_record(b"a", 0), _record(b"a", 1), _record(b"a", 2)])
    first = lanes.results.get(timeout=5)
    assert not isinstance(first, LaneFailure)
    assert [fate.record.offset for fate in first] == [0], "reported while 1 and 2 still run"
    release.set()
    assert [f.record.offset for f in _collect(lanes, 2)] == [1, 2]
    lanes.stop()


def test_a_lane_takes_queued_retry_records_before_queued_first_attempts() -> None:
    """A due retry record is not held up behind first attempts queued before it."""
    release = threading.Event()
    order: list[int] = []

    def process_until(chunk: Sequence[InboundRecord], _deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        if chunk[0].offset == 0:
            release.wait(10)  # the lane is busy while the next chunks queue up
        order.extend(r.offset for r in chunk)
        return [Delivered(r) for r in chunk], len(chunk)

    lanes = Lanes(1, lambda chunk: [], process_until)
    lanes._pace.note(1.0)  # slow: to the worker, one record a take
    lanes.dispatch([_record(b"a", 0)])
    _wait_until_taken(lanes)
    lanes.dispatch([_record(b"a", 1), _record(b"b", 2)])  # first attempts
    lanes.dispatch([_record(b"c", 3, attempts=1), _record(b"a", 4)])  # a retry, then a first
    release.set()
    assert len(_collect(lanes, 5)) == 5
    lanes.stop()
    assert order == [0, 3, 1, 2, 4]


def test_the_in_flight_limit_follows_the_pace_of_the_lanes() -> None:
    """Quick work: the ceiling. Slow calls: about QUEUED_WORK_S of work, two per lane at
    least; the limit shrinks at the first slow chunk and grows back gradually."""
    lanes = Lanes(4, lambda chunk: [])
    assert lanes.in_flight_limit(5000) == 5000  # nothing measured yet
    lanes._pace.note(20e-6)
    assert lanes.in_flight_limit(5000) == 5000
    lanes._pace.note(0.1)  # a downstream taking 100 ms a call
    assert lanes.in_flight_limit(5000) == int(4 * QUEUED_WORK_S / 0.1)
    lanes._pace.note(2.0)
    assert lanes.in_flight_limit(5000) == 8  # two per lane
    lanes._pace.note(20e-6)  # quick again: one sample does not undo it
    assert lanes.in_flight_limit(5000) == 8
    for _ in range(40):
        lanes._pace.note(20e-6)
    assert lanes.in_flight_limit(5000) == 5000
    lanes.stop()


def test_a_slow_inline_lane_asks_for_batches_of_about_a_second_of_work() -> None:
    """concurrency = 1: outcomes are recorded and due retries fetched between batches, so
    with a slow handler a batch must be small."""
    def process(chunk: Sequence[InboundRecord]) -> list[Fate]:
        time.sleep(0.02 * len(chunk))  # 20 ms a record
        return [Delivered(r) for r in chunk]

    lane = InlineLane(process)
    assert lane.in_flight_limit(500) == INLINE_SLICE  # nothing measured yet: one slice
    lane.dispatch([_record(b"a", 0), _record(b"b", 1)])
    assert 20 <= lane.in_flight_limit(500) <= int(QUEUED_WORK_S / 0.02)
    quick = InlineLane(lambda chunk: [Delivered(r) for r in chunk])
    quick.dispatch([_record(b"a", 0)])
    assert quick.in_flight_limit(500) == 500  # a quick handler: full batches


def test_a_fate_is_handed_back_before_the_next_call_of_its_take_starts() -> None:
    """Two events of one key, the first answered at once and the second slowly: the first's
    outcome is back while the second call still runs, so a crash then cannot make the
    downstream see the first again."""
    release = threading.Event()

    def process_until(chunk: Sequence[InboundRecord], _deadline: float | None, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        fates: list[Fate] = []
        for record in chunk:  # the whole chunk, as the real processor does without a deadline
            if record.offset == 1:
                release.wait(10)
            fates.append(Delivered(record))
        return fates, len(chunk)

    lanes = Lanes(1, lambda chunk: [], process_until)
    lanes._pace.note(0.001)  # quick so far: one take holds both records
    lanes._pace.seconds = 0.001
    lanes.dispatch([_record(b"a", 0), _record(b"a", 1)])
    first = lanes.results.get(timeout=5)
    assert not isinstance(first, LaneFailure)
    assert [fate.record.offset for fate in first] == [0]
    assert not release.is_set()
    release.set()
    assert [f.record.offset for f in _collect(lanes, 1)] == [1]
    lanes.stop()

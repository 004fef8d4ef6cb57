"""Worker lanes: same key never concurrent and in order; lane failures are reported."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from consumer.lanes import InlineLane, LaneFailure, Lanes
from consumer.records import Delivered, Fate, InboundRecord
from retry_topics.headers import RecordHeaders


def _record(key: bytes, offset: int) -> InboundRecord:
    return InboundRecord(topic="t", partition=0, offset=offset, timestamp_ms=None, key=key,
                         value=b"", raw_headers=(), headers=RecordHeaders(), event=None)


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

"""In-order offset bookkeeping: out-of-order completion never commits past a gap."""

from __future__ import annotations

import pytest

from consumer.pipeline.offsets import OffsetBook, PartitionOffsets


def test_offset_advances_only_over_a_contiguous_done_prefix() -> None:
    offsets = PartitionOffsets()
    offsets.track([10, 11, 12, 13])
    assert offsets.complete([12]) is None
    assert offsets.complete([11]) is None
    assert offsets.complete([10]) == 13  # 10, 11, 12 done: commit position 13
    assert offsets.committable == 13
    assert offsets.complete([13]) == 14
    assert offsets.in_flight == 0


def test_batches_complete_in_any_order_and_across_track_calls() -> None:
    offsets = PartitionOffsets()
    offsets.track([1, 2, 3])
    offsets.track([4, 5])
    assert offsets.complete([5, 2]) is None
    assert offsets.complete([1, 4]) == 3
    assert offsets.complete([3]) == 6
    assert offsets.complete([]) is None


def test_gaps_in_offsets_are_fine() -> None:
    """Compacted topics and transaction markers leave gaps; only tracked offsets count."""
    offsets = PartitionOffsets()
    offsets.track([5, 9])
    assert offsets.complete([9]) is None
    assert offsets.complete([5]) == 10


@pytest.mark.parametrize("second", [[3], [2], [4, 4], [6, 5]])
def test_tracking_out_of_order_is_a_bug_and_refused(second: list[int]) -> None:
    offsets = PartitionOffsets()
    offsets.track([3])
    with pytest.raises(ValueError, match="out of order"):
        offsets.track(second)
    assert offsets.in_flight == 1


def test_book_ignores_completions_of_forgotten_partitions() -> None:
    book = OffsetBook()
    book.track(("t", 0), [1])
    book.track(("t", 1), [1])
    assert book.in_flight() == 2
    book.forget(("t", 0))
    assert book.complete(("t", 0), [1]) is None
    assert book.complete(("t", 1), [1]) == 2
    assert book.in_flight() == 0


def test_stepping_over_undelivered_offsets_waits_for_every_pending_record() -> None:
    """A position past a transaction marker is committable only once nothing is pending."""
    offsets = PartitionOffsets()
    offsets.track([10, 11])
    assert offsets.step_over(13) is False  # 10 and 11 are not done: never past them
    assert offsets.complete([10, 11]) == 12
    assert offsets.step_over(13) is True  # 12 was a marker: 13 is the partition's end
    assert offsets.committable == 13
    assert offsets.step_over(13) is False  # nothing new to store
    assert offsets.step_over(12) is False  # never backwards
    offsets.track([13])
    assert offsets.complete([13]) == 14


def test_a_partition_nothing_was_consumed_from_may_step_over_to_its_position() -> None:
    book = OffsetBook()
    assert book.step_over(("t", 0), 4) is True
    assert book.step_over(("t", 0), 4) is False
    book.track(("t", 0), [4, 5])
    assert book.step_over(("t", 0), 7) is False
    assert book.complete(("t", 0), [4, 5]) == 6


def test_records_done_behind_an_unfinished_one_are_not_in_flight() -> None:
    """A drain waits for records in flight: one done behind a held one is waiting to be
    committed, not in flight."""
    book = OffsetBook()
    book.track(("t", 0), [5, 6, 7])
    assert book.complete(("t", 0), [6, 7]) is None
    assert book.in_flight(("t", 0)) == 1
    assert book.complete(("t", 0), [5]) == 8
    assert book.in_flight(("t", 0)) == 0

"""Lag evaluation as pure functions: OK / WARN / ERR / STOP, growth, stalls, waiting vs overdue."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from consumer.cli.lag import render
from consumer.ops.lag.history import HistoryFile, points_from_json, points_to_json
from consumer.ops.lag.model import (
    GroupReport,
    GroupSample,
    HistoryPoint,
    LagRules,
    PartitionSample,
    Status,
    TopicKind,
    TopicReport,
    TopicSample,
    evaluate,
    partition_lag,
    report_to_json,
    to_history_point,
)
from retry_topics.system_state import RECOVERED, STALE_MS, SystemState

NOW = 1_800_000_000_000
RULES = LagRules(window_ms=300_000, grace_ms=30_000)


def _part(committed: int | None, end: int, *, beginning: int = 0, partition: int = 0,
          **extra: object) -> PartitionSample:
    return PartitionSample(partition=partition, committed=committed, beginning=beginning,
                           end=end, **extra)  # type: ignore[arg-type]


def _sample(*topics: tuple[str, TopicKind, tuple[PartitionSample, ...]], members: int = 1,
            at: int = NOW) -> GroupSample:
    return GroupSample(group="g", taken_at_ms=at, members=members, topics=tuple(
        TopicSample(topic=name, kind=kind, partitions=parts) for name, kind, parts in topics))


def _main(*parts: PartitionSample, members: int = 1, at: int = NOW) -> GroupSample:
    return _sample(("m", "main", parts), members=members, at=at)


def _point(at: int, committed: int | None, lag: int, topic: str = "m") -> HistoryPoint:
    return HistoryPoint(taken_at_ms=at, offsets={(topic, 0): (committed, lag)})


def test_lag_counts_from_the_committed_offset_else_from_the_beginning() -> None:
    assert partition_lag("main", _part(7, 10, beginning=2)) == 3
    assert partition_lag("main", _part(None, 10, beginning=2)) == 8
    assert partition_lag("retry", _part(None, 0)) == 0
    assert partition_lag("dlq", _part(9, 10, beginning=4)) == 6  # records held, not "unread"


def test_records_counted_by_a_scan_beat_offsets_which_transaction_markers_also_take() -> None:
    """Three dead letters written in three transactions end at offset 6: the DLQ holds 3."""
    assert partition_lag("dlq", _part(None, 6, records=3)) == 3
    assert partition_lag("retry", _part(4, 5, records=0)) == 0  # only a marker is left


def test_a_dlq_whose_dead_letters_are_all_resolved_is_ok_and_one_with_open_ones_warns() -> None:
    """Replayed or discarded dead letters stay in the DLQ until retention: counting them
    kept lag at WARN for weeks after everything was dealt with."""
    def dlq(*parts: PartitionSample) -> GroupSample:
        return _sample(("m", "main", (_part(5, 5),)), ("m.dlq", "dlq", parts))

    resolved = evaluate(dlq(_part(None, 9, records=9, open=0)), [], RULES)
    assert resolved.status is Status.OK
    assert resolved.topics[1].reasons == ("holds 9 dead letter(s), none open (all replayed "
                                          "or discarded)",)
    pending = evaluate(dlq(_part(None, 9, records=9, open=2)), [], RULES)
    assert pending.status is Status.WARN
    assert pending.topics[1].open == 2
    unknown = evaluate(dlq(_part(None, 9, records=9)), [], RULES)  # the ledger was not read
    assert unknown.status is Status.WARN
    assert report_to_json(unknown)["topics"][1]["open"] is None


def test_no_lag_is_ok_even_without_members() -> None:
    report = evaluate(_main(_part(10, 10), members=0), [], RULES)
    assert report.status is Status.OK
    assert report.topics[0].lag == 0


def test_lag_with_no_members_is_stop() -> None:
    report = evaluate(_main(_part(3, 10), members=0), [], RULES)
    assert report.status is Status.STOP
    assert "no members" in report.topics[0].reasons[0]
    assert int(report.status) == 3


def test_with_no_members_each_partition_whose_records_wait_is_stop_too() -> None:
    """The rows an operator reads say which partitions nobody consumes, not OK."""
    report = evaluate(_main(_part(3, 10), _part(10, 10, partition=1), members=0), [], RULES)
    assert [p.status for p in report.topics[0].partitions] == [Status.STOP, Status.OK]


def test_a_retry_tier_no_longer_configured_is_judged_as_a_tier_run_drains() -> None:
    """run keeps consuming it, so it is OK while worked off, STOP without members, ERR if
    overdue; the reason says what it is."""
    def leftover(*parts: PartitionSample, members: int = 1) -> GroupSample:
        return GroupSample(group="g", taken_at_ms=NOW, members=members, topics=(TopicSample(
            topic="m.retry.30s", kind="retry", configured=False, partitions=parts),))

    report = evaluate(leftover(_part(3, 5)), [], RULES)
    (topic,) = report.topics
    assert (report.status, topic.configured, topic.lag) == (Status.OK, False, 2)
    assert topic.reasons == ("not in [retry] delays: run consumes it until the topic is "
                             "deleted",)
    assert evaluate(leftover(_part(3, 5), members=0), [], RULES).status is Status.STOP
    overdue = _part(3, 5, overdue=2, oldest_due_at_ms=NOW - 600_000)
    assert evaluate(leftover(overdue), [], RULES).status is Status.ERR
    empty = evaluate(leftover(_part(5, 5)), [], RULES)
    assert (empty.status, empty.topics[0].reasons) == (
        Status.OK, ("not in [retry] delays, and empty: delete the topic",))


def test_lag_with_members_and_no_history_is_ok() -> None:
    report = evaluate(_main(_part(3, 10, oldest_timestamp_ms=NOW - 4_000)), [], RULES)
    assert report.status is Status.OK
    assert report.topics[0].max_time_lag_ms == 4_000


def test_lag_growing_over_the_window_is_warn() -> None:
    history = [_point(NOW - 240_000, 1, 2), _point(NOW - 120_000, 2, 5)]
    report = evaluate(_main(_part(3, 12)), history, RULES)
    assert report.status is Status.WARN
    assert "grew from 2 to 9" in report.topics[0].reasons[0]


def test_lag_that_fell_in_between_is_not_growth() -> None:
    history = [_point(NOW - 240_000, 1, 2), _point(NOW - 120_000, 9, 1)]
    assert evaluate(_main(_part(10, 19)), history, RULES).status is Status.OK


def test_a_short_span_of_samples_gives_no_trend_verdict() -> None:
    history = [_point(NOW - 10_000, 1, 2)]
    assert evaluate(_main(_part(1, 50)), history, RULES).status is Status.OK


def test_samples_outside_the_window_are_ignored() -> None:
    history = [_point(NOW - 900_000, 1, 2)]
    assert evaluate(_main(_part(3, 12)), history, RULES).status is Status.OK


def test_a_sample_with_zero_lag_in_the_window_means_no_growth() -> None:
    history = [_point(NOW - 240_000, 5, 0), _point(NOW - 120_000, 5, 3)]
    assert evaluate(_main(_part(5, 12)), history, RULES).status is Status.OK


def test_committed_offset_not_moving_with_lag_is_a_stall() -> None:
    history = [_point(NOW - 240_000, 4, 6), _point(NOW - 120_000, 4, 6)]
    report = evaluate(_main(_part(4, 10)), history, RULES)
    assert report.status is Status.ERR
    assert "stalled" in report.topics[0].reasons[0]


def test_a_stall_without_members_is_stop() -> None:
    history = [_point(NOW - 240_000, 4, 6)]
    assert evaluate(_main(_part(4, 10), members=0), history, RULES).status is Status.STOP


def test_a_retry_topic_waiting_for_its_due_time_is_ok_and_not_stalled() -> None:
    part = _part(4, 10, waiting=6)
    history = [_point(NOW - 240_000, 4, 6, topic="r"), _point(NOW - 120_000, 4, 6, topic="r")]
    report = evaluate(_sample(("r", "retry", (part,))), history, RULES)
    assert report.status is Status.OK
    assert (report.topics[0].waiting, report.topics[0].overdue) == (6, 0)


def test_overdue_within_grace_is_ok_beyond_grace_is_err() -> None:
    within = _part(0, 3, waiting=1, overdue=2, oldest_due_at_ms=NOW - 10_000)
    assert evaluate(_sample(("r", "retry", (within,))), [], RULES).status is Status.OK
    beyond = _part(0, 3, waiting=1, overdue=2, oldest_due_at_ms=NOW - 45_000)
    report = evaluate(_sample(("r", "retry", (beyond,))), [], RULES)
    assert report.status is Status.ERR
    assert report.topics[0].max_overdue_ms == 45_000
    assert "2 overdue" in report.topics[0].reasons[0]


def test_a_dlq_holding_records_is_warn() -> None:
    empty = evaluate(_sample(("d", "dlq", (_part(None, 5, beginning=5),))), [], RULES)
    assert empty.status is Status.OK
    held = evaluate(_sample(("d", "dlq", (_part(None, 5, beginning=2),)), members=0), [], RULES)
    assert held.status is Status.WARN
    assert held.topics[0].lag == 3


def test_a_missing_topic_is_warn() -> None:
    report = evaluate(GroupSample(group="g", taken_at_ms=NOW, members=1, topics=(
        TopicSample(topic="m", kind="main", exists=False),)), [], RULES)
    assert report.status is Status.WARN


def test_the_worst_topic_decides_the_overall_status() -> None:
    report = evaluate(_sample(
        ("m", "main", (_part(10, 10),)),
        ("r", "retry", (_part(0, 1, overdue=1, oldest_due_at_ms=NOW - 60_000),)),
        ("d", "dlq", (_part(None, 1),)),
    ), [], RULES)
    assert [t.status for t in report.topics] == [Status.OK, Status.ERR, Status.WARN]
    assert report.status is Status.ERR


def test_json_document_is_stable() -> None:
    part = _part(None, 4, beginning=1, oldest_timestamp_ms=NOW - 2_000)
    document = report_to_json(evaluate(_main(part, members=0), [], RULES))
    assert document["group"] == "g"
    assert document["status"] == "STOP"
    (topic,) = document["topics"]
    assert {k: topic[k] for k in ("topic", "kind", "status", "lag", "max_time_lag_ms",
                                   "waiting", "overdue")} == {
        "topic": "m", "kind": "main", "status": "STOP", "lag": 3, "max_time_lag_ms": 2_000,
        "waiting": 0, "overdue": 0}
    (row,) = topic["partitions"]
    assert {k: row[k] for k in ("partition", "committed", "end", "lag", "time_lag_ms",
                                 "waiting", "overdue")} == {
        "partition": 0, "committed": None, "end": 4, "lag": 3, "time_lag_ms": 2_000,
        "waiting": 0, "overdue": 0}


def test_rules_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="window"):
        LagRules(window_ms=0)


def test_history_round_trips_and_prunes_old_points(tmp_path: Path) -> None:
    point = to_history_point(_main(_part(None, 4, beginning=1)))
    assert points_from_json(points_to_json([point])) == [point]
    assert points_from_json("garbage") == []
    history = HistoryFile(tmp_path / "h.json", group="g", main_topic="m")
    history.append(_point(NOW - 600_000, 1, 1), keep_ms=300_000)
    history.append(_point(NOW - 100_000, 2, 1), keep_ms=300_000)
    history.append(_point(NOW, 3, 1), keep_ms=300_000)
    assert [p.taken_at_ms for p in history.load()] == [NOW - 100_000, NOW]
    other = HistoryFile(tmp_path / "h.json", group="other", main_topic="m")
    assert other.load() == []
    (tmp_path / "h.json").write_text("{not json")
    assert history.load() == []


def test_the_table_names_an_empty_leftover_tier_as_such() -> None:
    """An empty tier the delays no longer include reads 'empty', not 'nothing waiting'."""
    sample = GroupSample(group="g", taken_at_ms=NOW, members=1, topics=(
        TopicSample(topic="m.retry.30s", kind="retry", configured=False,
                    partitions=(_part(5, 5),)),
        TopicSample(topic="m.retry.1m", kind="retry", partitions=(_part(5, 5),))))
    console = Console(width=200, record=True)
    console.print(render(evaluate(sample, [], RULES)))
    text = console.export_text()
    assert "m.retry.30s  retry  OK  not in [retry] delays, and empty: delete the topic" in text
    assert "m.retry.1m  retry  OK  nothing waiting" in text


def _stated(condition: str, *, since_ago_ms: int = 60_000, stated_ago_ms: int = 1_000,
            reason: str = "45 of the last 50 calls failed (503)") -> SystemState:
    return SystemState(instance="host:1:abc", condition=condition,  # type: ignore[arg-type]
                       since_ms=NOW - since_ago_ms, reason=reason,
                       stated_at_ms=NOW - stated_ago_ms, waiting=12)


def _with_system(*states: SystemState) -> GroupSample:
    return replace(_main(_part(10, 10)), system=states)


def test_a_downstream_down_is_warn_then_err_after_the_configured_time() -> None:
    warn = evaluate(_with_system(_stated("outage", since_ago_ms=60_000)), [], RULES)
    assert warn.status is Status.WARN
    assert "downstream unavailable since" in warn.system_reasons[0]
    assert ("(45 of the last 50 calls failed (503)); 12 event(s) held in memory"
            in warn.system_reasons[0])
    err = evaluate(_with_system(_stated("outage", since_ago_ms=RULES.outage_error_ms)), [],
                   RULES)
    assert err.status is Status.ERR


def test_halted_dead_letters_are_stop_with_the_reason() -> None:
    report = evaluate(_with_system(_stated(
        "halted", reason="20 dead letters in a row, every one answered 404: check delivery.url")),
        [], RULES)
    assert report.status is Status.STOP
    assert "check delivery.url" in report.system_reasons[0]
    document = report_to_json(report)
    assert document["system"]["status"] == "STOP"
    assert document["system"]["reasons"] == list(report.system_reasons)


def test_states_of_instances_that_stopped_restating_are_left_out() -> None:
    gone = _stated("halted", stated_ago_ms=STALE_MS + 1)
    healthy = _stated("ok")
    assert evaluate(_with_system(gone, healthy), [], RULES).status is Status.OK


def test_what_an_outage_held_stays_warn_for_the_grace_after_it_ended() -> None:
    """The sample taken the second the breaker closed saw tier records a minute past due
    (ERR) while they were being delivered. For grace_ms after an outage ended they are
    WARN; after that, or after a stop (an ok that is no recovery), ERR as ever."""
    overdue = _part(0, 3, waiting=1, overdue=4, oldest_due_at_ms=NOW - 58_000)

    def judged(state: SystemState) -> TopicReport:
        return evaluate(replace(_sample(("r", "retry", (overdue,))), system=(state,)), [],
                        RULES).topics[0]

    just_ended = judged(_stated("ok", since_ago_ms=2_000, reason=RECOVERED))
    assert just_ended.status is Status.WARN
    assert just_ended.reasons[0].endswith("4 overdue, oldest due 58s ago (held through an "
                                          "outage that ended 2s ago; going on)")
    assert judged(_stated("ok", since_ago_ms=RULES.grace_ms + 1_000,
                          reason=RECOVERED)).status is Status.ERR
    assert judged(_stated("ok", since_ago_ms=2_000, reason="")).status is Status.ERR


def test_a_state_survives_the_wire_and_garbage_is_no_state() -> None:
    state = _stated("outage")
    assert SystemState.from_json(state.to_json()) == state
    assert SystemState.from_json(b"not json") is None
    assert SystemState.from_json(b'{"instance": "x", "condition": "melted", "since_ms": 1, '
                                 b'"reason": "", "stated_at_ms": 1}') is None


def test_what_an_outage_holds_back_is_warn_with_the_outage_then_err_with_it() -> None:
    """While a run instance holds every partition for an outage, an overdue tier record and
    a main partition that does not move are the outage's doing: WARN, as the outage is, and
    ERR once the outage has lasted ``outage_error_ms``."""
    overdue = _part(0, 3, waiting=1, overdue=2, oldest_due_at_ms=NOW - 85_000)
    history = [_point(NOW - 240_000, 4, 6), _point(NOW - 120_000, 4, 6)]

    def judged(since_ago_ms: int) -> GroupReport:
        sample = replace(_sample(("m", "main", (_part(4, 10),)), ("r", "retry", (overdue,))),
                         system=(_stated("outage", since_ago_ms=since_ago_ms),))
        return evaluate(sample, history, RULES)

    during = judged(60_000)
    assert [t.status for t in during.topics] == [Status.WARN, Status.WARN]
    assert during.status is Status.WARN
    assert all(t.reasons[0].endswith("(held while the downstream is unavailable)")
               for t in during.topics)
    assert "stalled" in during.topics[0].reasons[0]
    assert "2 overdue" in during.topics[1].reasons[0]
    lasting = judged(RULES.outage_error_ms)
    assert [t.status for t in lasting.topics] == [Status.ERR, Status.ERR]
    assert lasting.status is Status.ERR

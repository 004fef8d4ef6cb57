"""The benchmarks' verdicts: per-round ratios, fair-drain figures, PASS or MISS."""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bench.delay_precision import lateness_targets
from bench.fairness import ProgressSample, drain_fairness, progress
from bench.targets import decode_drift
from bench.throughput import (
    GcCounter,
    Sample,
    checks,
    cpython_default_gc,
    loop_result,
    random_traceparent,
)
from bench.verdicts import Target, Unit, median_ratio, render_table


def _pass(rate: float, decoding_us: float = 0.0) -> Sample:
    return Sample("loop", 1000, 1000 / rate, 0.1, decode_s=decoding_us * 1000 / 1e6)


def test_a_rounds_decode_cost_is_the_mean_of_its_two_passes() -> None:
    result = loop_result("decode", [[_pass(50_000), _pass(25_000)]])
    assert result.round_us == [pytest.approx(30.0)]  # (20 us + 40 us) / 2
    assert result.rates == [50_000, 25_000]


def test_targets_compare_each_round_with_itself_and_keep_the_median() -> None:
    """A machine twice as fast in round 2 changes no ratio: each round is paired."""
    decode = loop_result("decode", [[_pass(40_000)] * 2, [_pass(80_000)] * 2,
                                    [_pass(40_000)] * 2])
    pipeline = loop_result("pipeline", [[_pass(30_000)], [_pass(60_000)], [_pass(20_000)]])
    raw = loop_result("raw", [[_pass(500_000)], [_pass(1_000_000)], [_pass(500_000)]])
    vs_decode, own, _ = checks({"pipeline": pipeline, "decode": decode, "raw": raw},
                               "pipeline")
    assert vs_decode.rounds == pytest.approx([0.75, 0.75, 0.5])
    assert vs_decode.value == pytest.approx(0.75)
    assert vs_decode.passed
    assert own.rounds == pytest.approx([1e6 / 30_000 - 25, 1e6 / 60_000 - 12.5, 25.0])
    assert own.value == pytest.approx(1e6 / 30_000 - 25)  # 8.33 us
    assert own.passed


def test_own_cost_with_decoding_timed_subtracts_each_pass_decoding_inside_that_pass() -> None:
    """Round 1: decode loop 25 us (20 decoding), pipeline 40 us (28 decoding): 12 - 5 = 7."""
    decode = loop_result("decode", [[_pass(40_000, 20.0), _pass(40_000, 20.0)]])
    pipeline = loop_result("pipeline", [[_pass(25_000, 28.0)]])
    raw = loop_result("raw", [[_pass(500_000)]])
    timed = checks({"pipeline": pipeline, "decode": decode, "raw": raw}, "pipeline")[2]
    assert timed.name == "pipeline own cost, decode timed"
    assert timed.rounds == pytest.approx([7.0])
    assert timed.passed


def test_gc_counter_counts_collections_only_while_installed() -> None:
    counter = GcCounter()
    with counter.installed():
        gc.collect()
        gc.collect()
    gc.collect()
    assert counter.collections == 2


def test_cpython_default_gc_restores_the_tuned_threshold() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(10_000, 10, 10)
        with cpython_default_gc():
            assert gc.get_threshold() == (700, 10, 10)
        assert gc.get_threshold() == (10_000, 10, 10)
    finally:
        gc.set_threshold(*saved)


def test_loop_result_keeps_every_pass_gc_count() -> None:
    got = loop_result("pipeline", [[replace(_pass(1000), gc_collections=3)],
                                   [replace(_pass(1000), gc_collections=0)]])
    assert got.gc_collections == [3, 0]


def test_bench_traceparents_are_valid_w3c_and_distinct() -> None:
    values = {random_traceparent() for _ in range(50)}
    assert len(values) == 50
    for value in values:
        context = TraceContextTextMapPropagator().extract({"traceparent": value})
        assert trace.get_current_span(context).get_span_context().is_valid


def test_no_check_is_left_for_the_withdrawn_pipeline_over_raw_target() -> None:
    decode = loop_result("decode", [[_pass(40_000)] * 2])
    pipeline = loop_result("pipeline", [[_pass(30_000)]])
    raw = loop_result("raw", [[_pass(500_000)]])
    names = [c.name for c in checks({"pipeline": pipeline, "decode": decode, "raw": raw},
                                    "pipeline")]
    assert not [name for name in names if "raw" in name]


# -- PASS or MISS -----------------------------------------------------------------------------


def test_a_target_passes_on_its_own_side_of_the_bound_bound_included() -> None:
    at_least = Target(key="1a", name="x", value=0.6, bound=0.6, unit=Unit.RATIO, at_least=True)
    at_most = Target(key="4a", name="y", value=5.01, bound=5.0, unit=Unit.SECONDS,
                     at_least=False)
    assert at_least.verdict == "PASS"
    assert at_most.verdict == "MISS"
    assert replace(at_most, value=5.0).passed


def test_median_ratio_pairs_the_rounds() -> None:
    value, each = median_ratio([10.0, 30.0, 20.0], [20.0, 20.0, 20.0])
    assert each == pytest.approx([0.5, 1.5, 1.0])
    assert value == pytest.approx(1.0)


def test_median_ratio_refuses_unpaired_rounds() -> None:
    with pytest.raises(ValueError, match="same, non-zero number of rounds"):
        median_ratio([1.0, 2.0], [1.0])


def test_the_table_prints_each_verdict_its_bound_and_the_count() -> None:
    table = render_table([
        Target(key="1a", name="happy path", value=0.45, bound=0.6, unit=Unit.RATIO,
               at_least=True, rounds=(0.44, 0.45, 0.5)),
        Target(key="5a", name="lateness p99", value=38.0, bound=50.0, unit=Unit.MS,
               at_least=False, note="(tier 5s)"),
    ])
    lines = table.splitlines()
    assert "45.0%" in lines[1]
    assert ">= 60.0%" in lines[1]
    assert "MISS [44.0% 45.0% 50.0%]" in lines[1]
    assert "<= 50 ms  PASS  (tier 5s)" in lines[2]
    assert lines[-1] == "1/2 PASS"


# -- a fair drain -----------------------------------------------------------------------------


START = {0: 0, 1: 0, 2: 100}
END = {0: 100, 1: 100, 2: 200}


def _at(at_s: float, *offsets: int) -> ProgressSample:
    return ProgressSample(at_s, dict(enumerate(offsets)))


def test_progress_is_the_drained_fraction_of_each_partitions_backlog() -> None:
    fractions = progress(_at(1.0, 50, 100, 125), START, END)
    assert fractions == {0: 0.5, 1: 1.0, 2: 0.25}


def test_an_empty_partition_counts_as_drained() -> None:
    assert progress(_at(1.0, 0), {0: 0}, {0: 0}) == {0: 1.0}


def test_partitions_in_step_have_a_small_spread_and_no_long_flat_stretch() -> None:
    samples = [_at(0.0, 0, 0, 100), _at(1.0, 0, 0, 100), *[
        _at(1.0 + step, 10 * step, 10 * step, 100 + 10 * step) for step in range(1, 11)]]
    fairness = drain_fairness(samples, START, END)
    assert fairness.spread == 0.0
    assert fairness.longest_flat_s == 0.0
    assert fairness.flat_partition is None
    assert fairness.drain_s == pytest.approx(9.0)  # from the first progress, at 2 s, to 11 s


def test_a_partition_left_flat_while_others_drain_is_measured_from_the_first_progress() -> None:
    """p2 waits until p0 and p1 are done, as a starved partition does."""
    samples = [_at(0.0, 0, 0, 100)]  # the group joins: nobody moves, nothing counted
    samples += [_at(float(t), 20 * t, 20 * t, 100) for t in range(1, 6)]  # p0, p1 drain
    samples += [_at(6.0, 100, 100, 150), _at(7.0, 100, 100, 200)]
    fairness = drain_fairness(samples, START, END)
    assert fairness.flat_partition == 2
    assert fairness.longest_flat_s == pytest.approx(4.0)  # 1 s -> 5 s, others moving
    assert fairness.spread == pytest.approx(1.0)
    assert fairness.done_at_s == {0: 4.0, 1: 4.0, 2: 6.0}
    assert fairness.drain_s == pytest.approx(6.0)


def test_a_flat_stretch_counts_only_while_another_partition_moves() -> None:
    """All partitions flat together (a pause of the whole consumer) is no unfairness."""
    samples = [_at(0.0, 0, 0, 100), _at(1.0, 10, 10, 110), _at(9.0, 10, 10, 110),
               _at(10.0, 100, 100, 200)]
    assert drain_fairness(samples, START, END).longest_flat_s == pytest.approx(0.0)


# -- retry lateness ---------------------------------------------------------------------------


def _row(p99: float, low: float) -> dict[str, float]:
    return {"samples": 80, "min_ms": low, "p50_ms": 20.0, "p99_ms": p99, "max_ms": p99 + 5,
            "early": int(low < 0)}


def test_lateness_is_judged_on_the_worst_tier() -> None:
    report = {"events": 80, "tiers": {"t.retry.1s": _row(30.0, 4.0),
                                      "t.retry.5s": _row(76.0, -2.0),
                                      "t.retry.9s": {"samples": 0}}}
    p99, early = lateness_targets(report)
    assert (p99.value, p99.verdict) == (76.0, "MISS")
    assert "t.retry.5s" in p99.note
    assert (early.value, early.verdict) == (-2.0, "MISS")


def test_lateness_of_on_time_retries_passes() -> None:
    p99, early = lateness_targets({"events": 80, "tiers": {"t.retry.1s": _row(41.0, 3.0)}})
    assert p99.passed
    assert early.passed


def test_the_noise_of_a_round_is_how_far_its_decode_passes_ran_apart() -> None:
    assert decode_drift(60_000, 40_000) == pytest.approx(0.4)
    assert decode_drift(50_000, 50_000) == 0.0

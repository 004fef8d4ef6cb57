"""The throughput benchmark's verdicts: per-round ratios, decode bracketing the round."""

from __future__ import annotations

import gc
from dataclasses import replace

import pytest
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bench.throughput import (
    GcCounter,
    Sample,
    checks,
    cpython_default_gc,
    loop_result,
    random_traceparent,
)


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

"""Consume rate of the full pipeline next to plain confluent-kafka loops, in one run.

Why a program and not a timed test: absolute rates depend on the machine, so the only claims
this project makes are *ratios* measured side by side against the same real broker, the
same topic and the same records, in the same process.

Mechanism: one topic set (main topic ``bench.<uuid>`` plus its retry tiers, DLQ and audit
topic, created by ``ensure_topics``) is filled with N realistic Avro events (the templates of
``examples/events.jsonl`` with a unique event id and entity key each, and the headers
``clinic-events publish`` stamps: ``clinic.event-id`` and ``clinic.event-type``, without a
``traceparent`` as from a publisher that does not trace) by an idempotent, lingering
producer, flushed before anything is measured. Then each loop reads all N records
from the beginning with its own fresh consumer group, ``--rounds`` times. A round runs the
decode loop first and last, and the other loops in between in an order rotated every round:

* ``raw``: ``consume(500, timeout)`` + ``store_offsets`` per batch (auto-commit commits);
* ``decode``: the same loop, also decoding every value with ``EventCodec``;
* ``pipeline``: ``build_runner`` with a no-op handler, run in a thread until
  ``runner.stats["delivered"] == N``, once with the product's default dedup store (SQLite in
  a temporary folder) and once with ``memory://``.

Every loop uses the product's consumer configuration (``kafka_io.build_consumer``), and every
clock runs from the first record the client hands back to the last record processed, so the
group join is excluded (it is reported apart). The same ``FirstRecordProbe`` wrapper notes the
first record for all loops; for the runner it is slipped in by swapping
``consumer.cli.wiring.build_consumer`` (``mock.patch``) while ``build_runner`` builds the client.

The pipeline runs with the ``clinic_events`` logger at WARNING (no per-event outcome lines)
and without an SDK tracer provider (the OpenTelemetry API's no-op tracer); both are printed.
The whole process runs with ``clinic-events run``'s garbage-collector setting
(``consumer.cli.gc_tuning``), and every pass reports the collections made during it;
``--gc-comparison`` adds a pipeline row with CPython's default threshold, side by side.
Reported: the median rate of each loop, and against the targets pipeline / decode and the
framework's own cost per event, ``1/pipeline - 1/decode``, each computed *per round* and the
median of the rounds kept.

Why per round, with decode bracketing the round: this machine's speed drifts by up to 2x
within a minute (the same decode loop measured 14 and 30 us per event minutes apart), so
loops are compared only with what ran next to them. A round's decode cost is the mean of its
two decode passes, which cancels a steady drift across the round; the median over rounds
drops rounds in which the speed jumped. A MISS still exits 0 (this is a measurement);
errors exit 1.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import math
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

import consumer.cli.wiring
from consumer.cli.gc_tuning import tune_for_streaming
from consumer.config.settings import Settings, load_settings
from consumer.dedup.store import open_dedup_store
from consumer.delivery.handlers import DeliveryContext
from consumer.dev.local_kafka import KAFKA_VERSION, LocalKafka
from consumer.errors import ClinicEventsError
from consumer.events.codec import EventCodec, EventRecord
from consumer.events.model import ENTITY_KEY_FIELD, entity_key, event_from_json
from consumer.kafka.clients import build_consumer
from consumer.kafka.provisioning import ensure_topics
from consumer.kafka.publishing import published_headers
from consumer.pipeline.runner import BATCH_SIZE
from retry_topics.errors import RetryTopicsError

TEMPLATES = Path(__file__).resolve().parent.parent / "examples" / "events.jsonl"
PIPELINE_VS_DECODE_TARGET = 0.60
CPYTHON_YOUNG_GENERATION_THRESHOLD = 700
FRAMEWORK_COST_TARGET_US = 10.0
STALL_TIMEOUT_S = 60.0  # no progress for this long is an error, not a slow measurement


class BenchError(RuntimeError):
    """The measurement could not be made (broker, setup, or a loop that stalled or failed)."""


# -- the records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProducedSet:
    """What was written to the main topic before measuring."""

    events: int
    value_bytes: int
    key_bytes: int


def random_traceparent() -> str:
    """A valid, sampled W3C ``traceparent`` with random (never all-zero) ids."""
    return f"00-{secrets.randbits(127) + 1:032x}-{secrets.randbits(63) + 1:016x}-01"


def load_templates(path: Path = TEMPLATES) -> list[EventRecord]:
    """The example events, in the codec's Avro-native form."""
    try:
        lines = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise BenchError(f"cannot read event templates {path}: {exc}") from exc
    return [event_from_json(json.loads(line)) for line in lines]


def bench_events(count: int, templates: Sequence[EventRecord]) -> Iterator[EventRecord]:
    """``count`` events cycling through the templates, each with its own event id and key."""
    for index in range(count):
        template = templates[index % len(templates)]
        payload = dict(template["payload"])
        field = ENTITY_KEY_FIELD[template["event_type"]]
        payload[field] = f"{payload[field]}-{index:07d}"
        yield {**template, "event_id": str(uuid.uuid4()), "payload": payload}


def produce_events(bootstrap: str, topic: str, count: int, *,
                   traced: bool = False) -> ProducedSet:
    """Write ``count`` encoded events with an idempotent, batching producer; wait for acks.

    ``traced``: each record also carries a ``traceparent`` of its own, as from a publisher
    that traces (``clinic-events publish`` with an exporter configured).
    """
    codec = EventCodec()
    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "linger.ms": 20, "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000,
    })
    failures: list[str] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(str(error))

    value_bytes = key_bytes = 0
    for event in bench_events(count, load_templates()):
        key, value = entity_key(event), codec.encode(event)
        value_bytes += len(value)
        key_bytes += len(key)
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=published_headers(
                    event, random_traceparent() if traced else None), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0 or failures:
        raise BenchError(f"producing the bench records failed: {failures[:3] or 'flush timed out'}")
    return ProducedSet(events=count, value_bytes=value_bytes, key_bytes=key_bytes)


# -- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One loop's pass over the N records."""

    loop: str
    events: int
    seconds: float  # first record handed back by the client -> last record processed
    join_s: float  # start (subscribe / runner start) -> first record
    decode_s: float = 0.0  # of ``seconds``, spent inside EventCodec.decode (DecodeTimer)
    gc_collections: int = 0  # garbage collections during the pass (GcCounter)

    @property
    def rate(self) -> float:
        return self.events / self.seconds


class DecodeTimer:
    """While open, every ``EventCodec.decode`` call adds its wall time to ``seconds``.

    Installed on the class around every pass of every loop, so the decode loop and the
    pipelines pay the same wrapper and two clock reads per event. Wall time, not thread CPU
    time (a syscall per read): with the runner's caller-runs lanes, decoding runs on one
    thread at a time almost always, so a decode is rarely interrupted by another thread.
    """

    def __init__(self) -> None:
        self._durations: list[float] = []  # list.append is atomic: any thread may decode

    @property
    def seconds(self) -> float:
        return math.fsum(self._durations)

    @contextmanager
    def installed(self) -> Iterator[DecodeTimer]:
        decode = EventCodec.decode
        clock = time.perf_counter
        durations = self._durations

        def timed(codec: EventCodec, data: bytes | None) -> EventRecord:
            started = clock()
            try:
                return decode(codec, data)
            finally:
                durations.append(clock() - started)

        with mock.patch.object(EventCodec, "decode", timed):
            yield self


class GcCounter:
    """While open, counts the garbage collector's collections (any generation, any thread)."""

    def __init__(self) -> None:
        self.collections = 0

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "stop":
            self.collections += 1

    @contextmanager
    def installed(self) -> Iterator[GcCounter]:
        gc.callbacks.append(self._on_gc)
        try:
            yield self
        finally:
            gc.callbacks.remove(self._on_gc)


@contextmanager
def cpython_default_gc() -> Iterator[None]:
    """CPython's own young-generation threshold (700) for a pass, to compare with the tuned one."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(CPYTHON_YOUNG_GENERATION_THRESHOLD, middle, old)
    try:
        yield
    finally:
        gc.set_threshold(young, middle, old)


class FirstRecordProbe:
    """A Consumer that notes when ``consume``/``poll`` first returned a record; else delegates."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.first_record_at: float | None = None

    def consume(self, *args: Any, **kwargs: Any) -> list[Message]:
        messages: list[Message] = self._inner.consume(*args, **kwargs)
        if messages and self.first_record_at is None:
            self.first_record_at = time.perf_counter()
        return messages

    def poll(self, *args: Any, **kwargs: Any) -> Message | None:
        message: Message | None = self._inner.poll(*args, **kwargs)
        if message is not None and self.first_record_at is None:
            self.first_record_at = time.perf_counter()
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _with_group(settings: Settings, loop: str) -> Settings:
    return replace(settings, kafka=replace(settings.kafka,
                                           group_id=f"{settings.topics.main}.{loop}.{uuid.uuid4()}"))


def consume_loop(settings: Settings, count: int, *, decode: bool) -> Sample:
    """A plain loop: ``consume`` batches, (decode each value), ``store_offsets`` per batch."""
    loop = "decode" if decode else "raw"
    codec = EventCodec()
    client = FirstRecordProbe(build_consumer(_with_group(settings, loop)))
    started = time.perf_counter()
    topic = settings.topics.main
    client.subscribe([topic])
    seen = 0
    progress_at = started
    try:
        while seen < count:
            # Asking for at most the remainder means the last batch never waits out the timeout.
            batch = client.consume(min(BATCH_SIZE, count - seen), 0.25)
            if not batch:
                if time.perf_counter() - progress_at > STALL_TIMEOUT_S:
                    raise BenchError(f"{loop} loop stalled at {seen}/{count} records")
                continue
            last: dict[int | None, int | None] = {}  # partition -> last offset in the batch
            for message in batch:
                error = message.error()
                if error is not None:
                    raise BenchError(f"{loop} loop: consumer error {error}")
                if decode:
                    codec.decode(message.value())
                last[message.partition()] = message.offset()
            seen += len(batch)
            client.store_offsets(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()
                                          if p is not None and o is not None])
            progress_at = time.perf_counter()
        finished = time.perf_counter()
    finally:
        client.close()
    first = client.first_record_at or started
    return Sample(loop, count, finished - first, first - started)


class NoOpHandler:
    """A delivery handler that does nothing; notes when it has been called ``target`` times."""

    def __init__(self, target: int) -> None:
        self._calls = itertools.count(1)  # next() on a count is atomic under the GIL
        self._target = target
        self.all_called = threading.Event()

    def deliver(self, event: EventRecord, context: DeliveryContext) -> None:
        if next(self._calls) >= self._target:
            self.all_called.set()

    def close(self) -> None:
        """Nothing to release."""


@contextmanager
def probed_runner_consumer() -> Iterator[list[FirstRecordProbe]]:
    """While open, ``build_runner`` gets its consumer wrapped in a ``FirstRecordProbe``."""
    built: list[FirstRecordProbe] = []

    def build(settings: Settings, **overrides: Any) -> Any:
        probe = FirstRecordProbe(build_consumer(settings, **overrides))
        built.append(probe)
        return probe

    with mock.patch("consumer.cli.wiring.build_consumer", build):
        yield built


def _with_concurrency(settings: Settings, concurrency: int) -> Settings:
    """The same settings with ``delivery.concurrency`` changed (1 = inline processing)."""
    return replace(settings, delivery=replace(settings.delivery, concurrency=concurrency))


def pipeline_run(settings: Settings, count: int, *, loop: str, store_url: str,
                 tracer_provider: TracerProvider | None = None,
                 meter_provider: MeterProvider | None = None) -> Sample:
    """The real runner with a no-op handler, until it has delivered ``count`` events."""
    run_settings = _with_group(settings, loop)
    handler = NoOpHandler(count)
    store = open_dedup_store(store_url, settings.dedup.ttl_ms)
    with probed_runner_consumer() as probes:
        assembly = consumer.cli.wiring.build_runner(run_settings, handler=handler, store=store,
                                             tracer_provider=tracer_provider,
                                             meter_provider=meter_provider, ensure=False)
    if not probes:
        assembly.close()
        raise BenchError("build_runner no longer builds its consumer through "
                         "consumer.cli.wiring.build_consumer; update probed_runner_consumer")
    runner = assembly.runner
    stats = runner.stats
    failure: list[BaseException] = []
    thread = threading.Thread(target=_run_capturing, args=(runner.run, failure),
                              name=f"bench-{loop}", daemon=True)
    started = time.perf_counter()
    thread.start()
    try:
        _wait_delivered(stats, handler, thread, count, loop)
        finished = time.perf_counter()
    finally:
        runner.stop()
        thread.join(60)
        assembly.close()
        first = probes[0].first_record_at if probes else None
        # The runner, its lanes, its clients and their callbacks form reference cycles;
        # collect them now so the producer's librdkafka threads do not linger into the
        # next loop's measurement.
        del assembly, runner, probes
        gc.collect()
    if failure:
        raise BenchError(f"{loop}: the runner failed: {failure[0]!r}") from failure[0]
    others = {k: v for k, v in stats.items() if k != "delivered" and v}
    if others:
        raise BenchError(f"{loop}: expected only deliveries, got {others}")
    first = first or started
    return Sample(loop, count, finished - first, first - started)


def _with_cpython_gc(run: Callable[[], Sample]) -> Sample:
    with cpython_default_gc():
        return run()


def _run_capturing(run: Callable[[], None], failure: list[BaseException]) -> None:
    try:
        run()
    except BaseException as exc:  # noqa: BLE001 - reported by the measuring thread
        failure.append(exc)


def _wait_delivered(stats: dict[str, int], handler: NoOpHandler, thread: threading.Thread,
                    count: int, loop: str) -> None:
    """Block until ``stats["delivered"] == count`` (waking rarely until the handler is done)."""
    last, progress_at = -1, time.perf_counter()

    def check() -> None:
        nonlocal last, progress_at
        if not thread.is_alive():
            raise BenchError(f"{loop}: the runner stopped at {stats['delivered']}/{count}")
        if stats["delivered"] != last:
            last, progress_at = stats["delivered"], time.perf_counter()
        elif time.perf_counter() - progress_at > STALL_TIMEOUT_S:
            raise BenchError(f"{loop}: stalled at {last}/{count} delivered")

    while not handler.all_called.wait(0.5):
        check()
    while stats["delivered"] < count:  # the last chunk's outcomes are being recorded
        check()
        time.sleep(0.0005)


# -- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoopResult:
    label: str
    rates: list[float]  # every pass, in order
    join_s: list[float]
    round_us: list[float]  # per round: microseconds per event (mean of the round's passes)
    round_other_us: list[float]  # the same, less the time spent inside EventCodec.decode
    gc_collections: list[int]  # every pass, in order

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def us_per_event(self) -> float:
        return 1e6 / self.rate


def loop_result(label: str, rounds: Sequence[Sequence[Sample]]) -> LoopResult:
    """One loop's passes, grouped by round."""
    passes = [sample for got in rounds for sample in got]
    return LoopResult(
        label, [s.rate for s in passes], [s.join_s for s in passes],
        [statistics.fmean(1e6 / s.rate for s in got) for got in rounds],
        [statistics.fmean(1e6 * (s.seconds - s.decode_s) / s.events for s in got)
         for got in rounds],
        [s.gc_collections for s in passes])


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    value: float  # the median of the rounds
    target: float
    unit: str
    passed: bool
    rounds: list[float]
    method: str = ""  # how a cost was measured, printed beside it


LABELS = {
    "raw": "raw consume + store_offsets",
    "decode": "consume + Avro decode",
    "pipeline": "pipeline, sqlite dedup",
    "pipeline_memory": "pipeline, memory:// dedup",
    "pipeline_inline": "pipeline, sqlite, concurrency 1",
    "pipeline_sdk": "pipeline, sqlite, SDK tracer",
    "pipeline_metrics": "pipeline, sqlite, SDK metrics",
    "pipeline_default_gc": "pipeline, sqlite, CPython gc",
}
PIPELINES = ("pipeline", "pipeline_memory", "pipeline_inline", "pipeline_default_gc",
             "pipeline_metrics", "pipeline_sdk")


def checks(results: dict[str, LoopResult], pipeline: str) -> list[Check]:
    """The targets for one pipeline loop, each the median of its per-round values."""
    pipe, decode_loop = results[pipeline], results["decode"]
    rounds = list(zip(pipe.round_us, decode_loop.round_us, strict=True))
    vs_decode = [decode / pipe for pipe, decode in rounds]
    own_cost = [pipe - decode for pipe, decode in rounds]
    # The same cost with decoding timed inside each pass: (pipeline - its decoding) -
    # (decode loop - its decoding). Each difference is taken within one pass, so a change
    # of machine speed between passes moves only the small remainders.
    own_cost_timed = [pipe_other - decode_other for pipe_other, decode_other in zip(
        pipe.round_other_us, decode_loop.round_other_us, strict=True)]

    def check(name: str, values: list[float], target: float, unit: str,
              method: str = "") -> Check:
        value = statistics.median(values)
        passed = value >= target if unit == "ratio" else value <= target
        return Check(name, value, target, unit, passed, values, method)

    return [
        check(f"{pipeline} / decode", vs_decode, PIPELINE_VS_DECODE_TARGET, "ratio"),
        check(f"{pipeline} own cost per event", own_cost, FRAMEWORK_COST_TARGET_US, "us",
              "(1/pipeline - 1/decode)"),
        check(f"{pipeline} own cost, decode timed", own_cost_timed, FRAMEWORK_COST_TARGET_US,
              "us", "(pipeline - its decoding) - (decode loop - its decoding)"),
    ]


def write_config(folder: Path, bootstrap: str, main: str, partitions: int) -> Path:
    """A TOML config with the product's defaults except broker, topics, group and store."""
    path = folder / "bench.toml"
    path.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{main}.group"
[topics]
main = "{main}"
partitions = {partitions}
[dedup]
store = "sqlite:///{folder / 'dedup.sqlite3'}"
""")
    return path


@contextmanager
def kafka_broker(state_dir: Path) -> Iterator[tuple[str, str]]:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local broker stopped at the end."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing, "KAFKA_BOOTSTRAP_SERVERS"
        return
    broker = LocalKafka(state_dir)
    bootstrap = broker.start(port=0)
    try:
        yield bootstrap, f"local KRaft broker (consumer.dev.local_kafka, Kafka {KAFKA_VERSION})"
    finally:
        broker.stop()


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    with kafka_broker(folder / "kafka") as (bootstrap, broker_source):
        main = f"bench.{uuid.uuid4().hex[:12]}"
        settings = load_settings(write_config(folder, bootstrap, main, args.partitions), env={})
        ensure_topics(settings)
        produced = produce_events(bootstrap, main, args.events, traced=args.traceparent)
        sdk_provider = TracerProvider(sampler=ALWAYS_ON) if args.sdk_tracing else None
        runs: dict[str, Callable[[int], Sample]] = {
            "raw": lambda _r: consume_loop(settings, args.events, decode=False),
            "decode": lambda _r: consume_loop(settings, args.events, decode=True),
            "pipeline": lambda r: pipeline_run(
                settings, args.events, loop="pipeline",
                store_url=f"sqlite:///{folder / f'dedup-{r}.sqlite3'}"),
            "pipeline_memory": lambda _r: pipeline_run(
                settings, args.events, loop="pipeline_memory", store_url="memory://"),
        }
        inline = _with_concurrency(settings, 1)
        runs["pipeline_inline"] = lambda r: pipeline_run(
            inline, args.events, loop="pipeline_inline",
            store_url=f"sqlite:///{folder / f'dedup-inline-{r}.sqlite3'}")
        if args.gc_comparison:
            runs["pipeline_default_gc"] = lambda r: _with_cpython_gc(lambda: pipeline_run(
                settings, args.events, loop="pipeline_default_gc",
                store_url=f"sqlite:///{folder / f'dedup-default-gc-{r}.sqlite3'}"))
        if args.sdk_metrics:
            runs["pipeline_metrics"] = lambda r: pipeline_run(
                settings, args.events, loop="pipeline_metrics",
                meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
                store_url=f"sqlite:///{folder / f'dedup-metrics-{r}.sqlite3'}")
        if sdk_provider is not None:
            runs["pipeline_sdk"] = lambda r: pipeline_run(
                settings, args.events, loop="pipeline_sdk", tracer_provider=sdk_provider,
                store_url=f"sqlite:///{folder / f'dedup-sdk-{r}.sqlite3'}")
        samples: dict[str, list[list[Sample]]] = {name: [] for name in runs}
        others = [name for name in runs if name != "decode"]
        for round_index in range(args.rounds):
            shift = round_index % len(others)
            order = ["decode", *others[shift:], *others[:shift], "decode"]
            for got in samples.values():
                got.append([])
            for name in order:
                with DecodeTimer().installed() as timer, GcCounter().installed() as counter:
                    sample = runs[name](round_index)
                sample = replace(sample, decode_s=timer.seconds,
                                 gc_collections=counter.collections)
                samples[name][-1].append(sample)
                if not args.json:
                    print(f"  round {round_index + 1}: {LABELS[name]:<29} {sample.rate:>11,.0f} "
                          f"events/s ({sample.seconds:.2f} s, join {sample.join_s:.2f} s)",
                          file=sys.stderr, flush=True)
    results = {name: loop_result(LABELS[name], got) for name, got in samples.items()}
    return {
        "broker": {"bootstrap": bootstrap, "source": broker_source},
        "setup": {
            "events": produced.events, "partitions": args.partitions, "rounds": args.rounds,
            "avg_value_bytes": round(produced.value_bytes / produced.events, 1),
            "avg_key_bytes": round(produced.key_bytes / produced.events, 1),
            "record_headers": "as clinic-events publish stamps them (clinic.event-id, "
                              "clinic.event-type) "
                              + ("and a traceparent each, as from a publisher that traces"
                                 if args.traceparent else
                                 "without a traceparent, as from a publisher that does not "
                                 "trace"),
            "batch_size": BATCH_SIZE, "lanes": settings.delivery.concurrency,
            "retry_tiers": [tier.topic for tier in settings.retry.tiers],
            "sqlite_dedup": "a fresh file per run in a temporary folder (product defaults: "
                            "append-only log, WAL, synchronous=NORMAL)",
            "tracing": "SDK TracerProvider, ALWAYS_ON, no exporter (pipeline_sdk row only); "
                       "otherwise no SDK provider (OpenTelemetry API no-op tracer)"
                       if sdk_provider else "no SDK tracer provider (OpenTelemetry API no-op)",
            "outcome_log_level": logging.getLevelName(
                logging.getLogger("clinic_events").getEffectiveLevel()),
            "clock": "first record returned by the client -> last record processed "
                     "(group join excluded, reported as join_s)",
            "rounds_order": "decode first and last, the other loops between (rotated); a "
                            "round's decode cost is the mean of its two passes",
            "decode_timing": "every EventCodec.decode call is timed (perf_counter) in every "
                             "loop that decodes, the same wrapper in each",
            "gc": f"young-generation threshold {gc.get_threshold()[0]:,} as set by "
                  "consumer.cli.gc_tuning for clinic-events run"
                  + (f" ({CPYTHON_YOUNG_GENERATION_THRESHOLD} in the CPython gc row)"
                     if args.gc_comparison else ""),
        },
        "loops": {name: {"label": r.label, "median_events_per_s": round(r.rate),
                         "us_per_event": round(r.us_per_event, 2),
                         "passes_events_per_s": [round(x) for x in r.rates],
                         "rounds_us_per_event": [round(x, 2) for x in r.round_us],
                         "join_s": [round(x, 2) for x in r.join_s],
                         "gc_collections": r.gc_collections}
                  for name, r in results.items()},
        "checks": [asdict(c) for pipeline in PIPELINES if pipeline in results
                   for c in checks(results, pipeline)],
    }


def render(report: dict[str, Any]) -> str:
    setup, loops = report["setup"], report["loops"]
    lines = [
        f"clinic-events consume throughput: {setup['events']:,} events "
        f"(avg value {setup['avg_value_bytes']:.0f} B, key {setup['avg_key_bytes']:.0f} B), "
        f"{setup['partitions']} partitions, {setup['rounds']} round(s)",
        f"headers:  {setup['record_headers']}",
        f"broker:   {report['broker']['bootstrap']} ({report['broker']['source']})",
        f"pipeline: {setup['lanes']} lanes, batch {setup['batch_size']}, "
        f"{len(setup['retry_tiers'])} retry tiers subscribed, no-op handler",
        f"tracing:  {setup['tracing']}",
        f"logging:  'clinic_events' logger at {setup['outcome_log_level']} "
        "(per-event outcome lines off)",
        f"clock:    {setup['clock']}",
        f"rounds:   {setup['rounds_order']}",
        f"decode:   {setup['decode_timing']}",
        f"gc:       {setup['gc']}",
        "",
        f"{'loop (median of passes)':<30} {'events/s':>10} {'us/event':>9}  "
        f"{'passes (events/s)':<28} join s / gc collections",
    ]
    for loop in loops.values():
        rounds = " ".join(f"{x:,}" for x in loop["passes_events_per_s"])
        joins = " ".join(f"{x:.2f}" for x in loop["join_s"])
        collections = " ".join(str(x) for x in loop["gc_collections"])
        lines.append(f"{loop['label']:<30} {loop['median_events_per_s']:>10,} "
                     f"{loop['us_per_event']:>9.2f}  {rounds:<28} {joins} / {collections}")
    lines += ["", "against the targets, median of the rounds (each round's value in brackets):"]
    for check in report["checks"]:
        verdict = "PASS" if check["passed"] else "MISS"
        if check["unit"] == "ratio":
            each = " ".join(f"{x:.1%}" for x in check["rounds"])
            lines.append(f"{check['name']:<38} {check['value']:>8.1%}   target >= "
                         f"{check['target']:.0%}   {verdict}   [{each}]")
        else:
            each = " ".join(f"{x:.1f}" for x in check["rounds"])
            lines.append(f"{check['name']:<38} {check['value']:>7.2f} us  target <= "
                         f"{check['target']:.0f} us  {verdict}   [{each}]  {check['method']}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Consume rate of the full pipeline (no-op handler) next to plain "
                    "confluent-kafka loops, measured side by side against a real broker.")
    parser.add_argument("--events", type=int, default=200_000, help="records to produce")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the topic")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds (each: decode, the other loops, decode again); the "
                             "targets use the median of the rounds")
    parser.add_argument("--sdk-tracing", action="store_true",
                        help="add a pipeline row with an SDK tracer provider (ALWAYS_ON, no "
                             "exporter)")
    parser.add_argument("--traceparent", action="store_true",
                        help="records also carry a traceparent each, as from a publisher that "
                             "traces (the pipeline then passes the trace context on)")
    parser.add_argument("--sdk-metrics", action="store_true",
                        help="add a pipeline row with an SDK meter provider (in-memory reader, "
                             "no export): the counter and the per-call duration histogram")
    parser.add_argument("--gc-comparison", action="store_true",
                        help="add a pipeline row run with CPython's default garbage-collector "
                             "threshold instead of clinic-events run's")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    for name in ("events", "partitions", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("clinic_events").setLevel(logging.WARNING)
    tune_for_streaming()  # the process runs as clinic-events run's does
    try:
        with tempfile.TemporaryDirectory(prefix="clinic-events-bench-") as tmp:
            report = measure(args, Path(tmp))
    except (BenchError, ClinicEventsError, RetryTopicsError, KafkaException) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

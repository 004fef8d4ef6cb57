"""Instructions per event of the pipeline's own work, counted by callgrind: a deterministic A/B.

Why: on this shared 2-core machine the wall-clock own cost per event that ``throughput.py``
reports moves by several microseconds between runs of the same code, which hides the effect
of most single changes to the hot path. ``valgrind --tool=callgrind`` counts the
instructions a process executes, and that count barely moves between runs of the same code on
the same input, whatever else the machine is doing. So this program can say exactly whether a
change made the pipeline do more or less work per event, next to any earlier revision
(``--against REV``). Instructions are not time: cache misses (the dedup index, fresh
objects) and thread hand-offs cost time without instructions. This program never replaces
``throughput.py``, the only source of performance claims; it guides work on the hot path.

Mechanism, without a broker: the real runner (``consumer.cli.wiring.build_runner``,
``delivery.concurrency = 1`` so that everything runs on one thread and no count depends on
thread scheduling, a no-op handler) consumes prebuilt ``confluent_kafka.Message`` objects
from a stand-in consumer: N events from the templates of ``examples/events.jsonl``, with
the headers ``clinic-events publish`` stamps, in runs of one partition as fetches return
them. A stand-in producer is used because nothing is republished. The decode loop decodes
the same messages in batches of 500. Each loop runs under callgrind with N and with 3N
events, and so does a run that only builds the messages. Per event, a loop's count is
``((loop, 3N) - (loop, N) - ((setup, 3N) - (setup, N))) / 2N``: start-up, imports and
message building cancel out. Event ids are deterministic and ``PYTHONHASHSEED`` is fixed, so
two runs of the same tree give the same figures (measured: decode and memory identical,
SQLite 22 instructions per event apart, of about 31,000 of own work).

The measured code is imported from the tree under test (``PYTHONPATH``); the harness below
uses only the product's own API, so it also runs against earlier revisions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOOPS = ("setup", "decode", "memory", "sqlite")
"""``setup`` builds the messages only; ``memory`` and ``sqlite`` run the pipeline with that
dedup store."""
PARTITIONS = 6
FETCH_RUN = 83  # records of one partition in a row, as a fetch hands them over
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


class InstructionsError(RuntimeError):
    """The count could not be made (valgrind missing, a run failed, a revision unknown)."""


@dataclass(frozen=True, slots=True)
class PerEvent:
    """Instructions per event of one tree's loops."""

    decode: float
    pipeline: dict[str, float]  # dedup store -> instructions per event

    def own(self, store: str) -> float:
        """The pipeline's own work: what it does beyond the decode loop."""
        return self.pipeline[store] - self.decode


def collected(valgrind_stderr: str) -> int:
    """The instruction total callgrind reports at the end of a run."""
    found = _COLLECTED.findall(valgrind_stderr)
    if not found:
        raise InstructionsError(f"no instruction count in valgrind's output:\n"
                                f"{valgrind_stderr[-2000:]}")
    return int(found[-1])


def per_event(counts: Mapping[tuple[str, int], int], small: int) -> PerEvent:
    """Instructions per event of each loop, set-up and start-up cancelled (see the module)."""
    large = 3 * small

    def loop(name: str) -> float:
        grown = counts[(name, large)] - counts[(name, small)]
        setup = counts[("setup", large)] - counts[("setup", small)]
        return (grown - setup) / (large - small)

    return PerEvent(decode=loop("decode"),
                    pipeline={store: loop(store) for store in ("memory", "sqlite")})


# -- the measured process (runs under callgrind) -------------------------------------------


def _messages(count: int) -> list[Any]:
    """``count`` encoded bench events as consumed messages, in fetch-like partition runs."""
    from confluent_kafka import Message

    from consumer.events.codec import EventCodec
    from consumer.events.model import ENTITY_KEY_FIELD, entity_key, event_from_json
    from consumer.kafka.publishing import published_headers

    codec = EventCodec()
    templates = [event_from_json(json.loads(line)) for line in
                 (REPO / "examples" / "events.jsonl").read_text().splitlines() if line.strip()]
    by_partition: dict[int, list[Any]] = {p: [] for p in range(PARTITIONS)}
    for index in range(count):
        template = templates[index % len(templates)]
        payload = dict(template["payload"])
        field = ENTITY_KEY_FIELD[template["event_type"]]
        payload[field] = f"{payload[field]}-{index:07d}"
        event = {**template, "event_id": str(uuid.UUID(int=index + 1)), "payload": payload}
        headers: list[tuple[str, str | bytes | None]] = [
            (name, value.encode() if isinstance(value, str) else value)
            for name, value in published_headers(event, None)]
        partition = index % PARTITIONS
        offset = len(by_partition[partition])
        by_partition[partition].append(Message(
            topic="instructions.t", partition=partition, offset=offset, key=entity_key(event),
            value=codec.encode(event), headers=headers, timestamp=(1, 1_700_000_000_000 + index)))
    ordered: list[Any] = []
    for start in range(0, max(len(run) for run in by_partition.values()), FETCH_RUN):
        for run in by_partition.values():
            ordered.extend(run[start:start + FETCH_RUN])
    return ordered


class _StandInConsumer:
    """Hands out the prebuilt messages in batches, then stops the runner when all are done."""

    def __init__(self, messages: list[Any], target: int) -> None:
        self._messages = messages
        self._target = target
        self._next = 0
        self._assigned = False
        self.runner: Any = None
        self._on_assign: Any = None
        self._topics: list[str] = []

    def subscribe(self, topics: list[str], on_assign: Any = None, **_callbacks: Any) -> None:
        self._topics, self._on_assign = topics, on_assign

    def consume(self, count: int, _timeout: float) -> list[Any]:
        from confluent_kafka import TopicPartition

        if not self._assigned:
            self._assigned = True
            self._on_assign(self, [TopicPartition(topic, p) for topic in self._topics
                                   for p in range(PARTITIONS)])
        batch = self._messages[self._next:self._next + count]
        self._next += len(batch)
        return batch

    def poll(self, _timeout: float) -> None:
        if self.runner is not None and self.runner.stats["delivered"] >= self._target:
            self.runner.stop()

    def position(self, partitions: list[Any]) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def store_offsets(self, **_kwargs: Any) -> None: ...
    def pause(self, _partitions: list[Any]) -> None: ...
    def resume(self, _partitions: list[Any]) -> None: ...
    def seek(self, _partition: Any) -> None: ...
    def commit(self, **_kwargs: Any) -> None: ...
    def close(self) -> None: ...


class _StandInProducer:
    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float | None = None) -> int:
        return 0

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        raise InstructionsError("a no-op handler republishes nothing")

    def close(self) -> None: ...


class _NoOpHandler:
    def deliver(self, _event: Any, _context: Any) -> None: ...
    def close(self) -> None: ...


def measured_run(loop: str, count: int) -> None:
    """The work callgrind counts: build ``count`` messages, then run ``loop`` over them."""
    import logging
    from dataclasses import replace
    from unittest import mock

    import consumer.cli.wiring
    from consumer.cli.gc_tuning import tune_for_streaming
    from consumer.config.settings import DEFAULTS, load_settings
    from consumer.dedup.store import open_dedup_store
    from consumer.events.codec import EventCodec

    logging.getLogger("clinic_events").setLevel(logging.WARNING)
    tune_for_streaming()
    messages = _messages(count)
    if loop == "setup":
        return
    if loop == "decode":
        codec = EventCodec()
        for start in range(0, count, 500):
            for message in messages[start:start + 500]:
                codec.decode(message.value())
        return
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "instructions.toml"
        # No broker, so no transactions; they cost per commit (once a second), not per event.
        hops = ("transactional_hops = false\n"
                if "transactional_hops" in DEFAULTS["kafka"] else "")
        config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:9"\n' + hops +
                          '[topics]\nmain = "instructions.t"\n'
                          f'partitions = {PARTITIONS}\n')
        settings = load_settings(config, env={})
        settings = replace(settings, delivery=replace(settings.delivery, concurrency=1))
        store_url = "memory://" if loop == "memory" else f"sqlite:///{folder}/dedup.sqlite3"
        stand_in = _StandInConsumer(messages, count)
        with mock.patch("consumer.cli.wiring.build_consumer", return_value=stand_in), \
                mock.patch("consumer.cli.wiring.build_producer", return_value=_StandInProducer()):
            assembly = consumer.cli.wiring.build_runner(
                settings, handler=_NoOpHandler(),
                store=open_dedup_store(store_url, settings.dedup.ttl_ms), ensure=False)
        stand_in.runner = assembly.runner
        assembly.runner.run()
        delivered = assembly.runner.stats["delivered"]
        assembly.close()
    if delivered != count:
        raise InstructionsError(f"{loop}: delivered {delivered} of {count}")


# -- the counting process ------------------------------------------------------------------


def count_instructions(tree: Path, loop: str, count: int, valgrind: str) -> int:
    """Run ``loop`` over ``count`` events under callgrind, importing the code of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    result = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, str(Path(__file__).resolve()), "--inner", loop, str(count)],
        capture_output=True, text=True, env=env, check=False, cwd=tree)
    if result.returncode != 0:
        raise InstructionsError(f"{loop} ({count} events, {tree}) failed:\n"
                                f"{result.stderr[-3000:]}")
    return collected(result.stderr)


def measure(tree: Path, small: int, valgrind: str) -> PerEvent:
    counts = {(loop, size): count_instructions(tree, loop, size, valgrind)
              for loop in LOOPS for size in (small, 3 * small)}
    return per_event(counts, small)


@contextmanager
def revision_tree(revision: str) -> Iterator[Path]:
    """A detached worktree of ``revision`` in a temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="instructions-"))
    tree = folder / "tree"
    added = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet",
                            str(tree), revision], capture_output=True, text=True, check=False)
    if added.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise InstructionsError(f"cannot check out {revision}: {added.stderr.strip()}")
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                       capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def report(results: Sequence[tuple[str, PerEvent]], small: int) -> str:
    lines = [f"instructions per event (callgrind; {small:,} and {3 * small:,} events, "
             "delivery.concurrency 1, no-op handler; instructions, not time)", "",
             f"{'tree':<24}{'decode':>10}{'memory':>10}{'own':>9}{'sqlite':>10}{'own':>9}"]
    for name, figures in results:
        lines.append(f"{name:<24}{figures.decode:>10,.0f}"
                     f"{figures.pipeline['memory']:>10,.0f}{figures.own('memory'):>9,.0f}"
                     f"{figures.pipeline['sqlite']:>10,.0f}{figures.own('sqlite'):>9,.0f}")
    if len(results) == 2:
        (name, now), (base, then) = results
        lines.append("")
        for store in ("memory", "sqlite"):
            change = now.own(store) - then.own(store)
            lines.append(f"own work, {store}: {change:+,.0f} instructions per event "
                         f"({change / then.own(store):+.1%}) in {name} against {base}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=2000,
                        help="the smaller run's events (the larger runs three times as many)")
    parser.add_argument("--against", metavar="REV",
                        help="also count a git revision (e.g. HEAD~1) and show the change")
    parser.add_argument("--inner", nargs=2, metavar=("LOOP", "EVENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        measured_run(args.inner[0], int(args.inner[1]))
        return 0
    if args.events < 1:
        parser.error("--events must be at least 1")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("instructions: valgrind is not installed (Debian package valgrind)",
              file=sys.stderr)
        return 1
    try:
        results = [("working tree", measure(REPO, args.events, valgrind))]
        if args.against:
            with revision_tree(args.against) as tree:
                results.append((args.against, measure(tree, args.events, valgrind)))
    except InstructionsError as exc:
        print(f"instructions: {exc}", file=sys.stderr)
        return 1
    print(report(results, args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())

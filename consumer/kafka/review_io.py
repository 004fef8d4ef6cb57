"""Kafka I/O of the review page (``clinic-events serve``) beyond what ``dlq`` does.

The page lists and resolves dead letters with :mod:`consumer.kafka.dlq_io` (so a replay or
discard from the page is the same exactly-once, ledgered, audited run as the CLI's). This
module adds what only the page needs:

* :func:`find_hops`: a record's earlier hops, read from the retry tiers (records whose
  ``clinic.original-*`` headers name the same original record), for its journey. A tier
  keeps them only for its retention, and the scan stops after :data:`HOP_SCAN_CAP` records
  per tier, so a journey may show the last attempt only;
* :func:`read_audit`: the latest records of the audit topic, newest first (who did what
  when);
* :func:`write_audit`: one audit record outside any transaction (revealing PHI is audited
  this way: nothing else is written with it).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumer.config.settings import Settings
from consumer.kafka.client_log import ClientLog
from consumer.kafka.clients import build_consumer, kafka_reason, message_headers
from consumer.kafka.dlq_ledger import DlqIoError, write_plain
from retry_topics.errors import HeaderError
from retry_topics.headers import Provenance, RecordHeaders, decode_headers

HOP_SCAN_CAP = 20_000
READ_TIMEOUT_S = 10.0
TIMEOUT_S = 10.0


@contextlib.contextmanager
def _reader(settings: Settings, group_id: str, **required: Any) -> Iterator[Consumer]:
    """A consumer of the page's own group, its client lines logged once; client errors
    become ``DlqIoError``, as ``dlq`` reports them."""
    log = ClientLog()
    consumer = build_consumer(settings, **{
        "group.id": group_id, "enable.auto.commit": False, "logger": log, **required})
    try:
        yield consumer
    except KafkaException as exc:
        raise DlqIoError(f"Kafka: {kafka_reason(exc)}") from exc
    finally:
        try:
            consumer.close()
        finally:
            log.close()


def _read(settings: Settings, starts: dict[tuple[str, int], tuple[int, int]],
          ) -> list[Any]:
    """Every message between the (start, end) offsets of each partition, read committed."""
    if not starts:
        return []
    found: list[Any] = []
    pending = {key for key, (start, end) in starts.items() if start < end}
    with _reader(settings, f"{settings.kafka.group_id}.review.{uuid.uuid4().hex[:12]}",
                 **{"enable.partition.eof": True}) as consumer:
        consumer.assign([TopicPartition(t, p, starts[(t, p)][0]) for t, p in pending])
        deadline = time.monotonic() + READ_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.3):
                key = (message.topic() or "", int(message.partition() or 0))
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(key)
                    continue
                if key not in pending:
                    continue
                offset = int(message.offset() or 0)
                if offset < starts[key][1]:
                    found.append(message)
                if offset >= starts[key][1] - 1:
                    pending.discard(key)
    return found


def _ranges(settings: Settings, topics: Sequence[str], last: int | None
            ) -> dict[tuple[str, int], tuple[int, int]]:
    """(start, end) per partition of ``topics``: the last ``last`` records, or every one."""
    ranges = {}
    with _reader(settings, f"{settings.kafka.group_id}.review") as consumer:
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for partition in sorted(meta.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=TIMEOUT_S, cached=False)
                ranges[(topic, partition)] = (low if last is None else max(low, high - last),
                                              high)
    return ranges


def find_hops(settings: Settings, original: Provenance) -> list[tuple[str, RecordHeaders]]:
    """(tier topic, headers) of the retry-tier records that are hops of ``original``."""
    ranges = _ranges(settings, settings.retry.retry_topics, HOP_SCAN_CAP)
    hops = []
    for message in _read(settings, ranges):
        try:
            headers = decode_headers(message_headers(message))
        except HeaderError:
            continue
        if headers.provenance is not None and headers.provenance.topic == original.topic \
                and headers.provenance.partition == original.partition \
                and headers.provenance.offset == original.offset:
            hops.append((str(message.topic()), headers))
    return hops


def read_audit(settings: Settings, topic: str, limit: int = 50) -> list[dict[str, Any]]:
    """The latest ``limit`` audit records (per partition), newest first; unreadable ones
    are left out."""
    entries = []
    for message in _read(settings, _ranges(settings, [topic], limit)):
        try:
            entry = json.loads(message.value() or b"")
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    entries.sort(key=lambda e: str(e.get("finished_at") or e.get("at") or ""), reverse=True)
    return entries[:limit]


def write_audit(settings: Settings, topic: str, key: str, audit: dict[str, Any]) -> None:
    """Append one audit record to ``topic`` (which must exist) and wait for its ack."""
    try:
        write_plain(settings, topic, key.encode(), json.dumps(audit).encode())
    except KafkaException as exc:
        raise DlqIoError(f"Kafka: {kafka_reason(exc)}") from exc

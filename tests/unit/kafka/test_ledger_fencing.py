"""``LedgerWriter`` told that it was fenced, however confluent-kafka reports it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

import consumer.kafka.dlq_ledger
from consumer.config.settings import load_settings
from consumer.kafka.dlq_ledger import DlqFencedError, LedgerWriter

FENCED = KafkaError(KafkaError._FENCED, "Producer fenced by newer instance", fatal=True)


class FencedMidFlush:
    """A producer fenced by a newer run while ``flush`` ran: ``flush`` fails with a bare
    ``SystemError`` (seen under load), and the abort that follows is refused as fenced."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def init_transactions(self, _timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def list_topics(self, topic: str, timeout: float) -> Any:
        return type("M", (), {"topics": {topic: type("T", (), {"error": None})()}})()

    def produce(self, topic: str, **_kwargs: Any) -> None:
        self.calls.append(f"produce {topic}")

    def flush(self, _timeout: float) -> int:
        self.calls.append("flush")
        raise SystemError("<method 'flush' of 'cimpl.Producer' objects> returned NULL "
                          "without setting an exception")

    def abort_transaction(self, _timeout: float) -> None:
        self.calls.append("abort")
        raise KafkaException(FENCED)

    def close(self) -> None: ...


def _writer_over(producer: FencedMidFlush, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> LedgerWriter:
    """A ledger writer on ``producer``, with a transaction open (as after ``add``)."""
    monkeypatch.setattr(consumer.kafka.dlq_ledger, "build_producer",
                        lambda *_args, **_kwargs: producer)
    config = tmp_path / "c.toml"
    config.write_text("")
    writer = LedgerWriter(load_settings(config, env={}), "t.dlq", "t.dlq-ledger")
    writer._opened_at = 0.0
    return writer


def test_a_bare_system_error_from_flush_is_recognised_as_the_fencing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replays side by side: the later one fences the earlier, which must stop saying
    so (exit 1, audited as fenced), not with a traceback."""
    producer = FencedMidFlush()
    writer = _writer_over(producer, tmp_path, monkeypatch)
    with pytest.raises(DlqFencedError, match="this run was fenced"):
        writer.commit()
    assert writer.fenced
    assert producer.calls[-2:] == ["flush", "abort"]


class FencedMidCommit(FencedMidFlush):
    """Fenced while its commit added the transaction's partitions: the commit fails with
    the AddPartitionsToTxn error, whose code is not a fencing code but whose text is."""

    def flush(self, _timeout: float) -> int:
        self.calls.append("flush")
        return 0

    def commit_transaction(self, _timeout: float) -> None:
        self.calls.append("commit")
        raise KafkaException(KafkaError(
            KafkaError._STATE, "Failed to add partitions to transaction: Local: This "
            "instance has been fenced by a newer instance"))


def test_a_commit_failing_on_the_fencing_s_text_is_recognised_as_the_fencing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = FencedMidCommit()
    writer = _writer_over(producer, tmp_path, monkeypatch)
    with pytest.raises(DlqFencedError, match="this run was fenced"):
        writer.commit()
    assert writer.fenced


def test_failed_deliveries_and_an_abort_refused_as_fenced_are_the_fencing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery report need not carry a fencing code; the abort that follows the failed
    deliveries is refused as fenced, and that says it."""
    producer = FencedMidCommit()
    writer = _writer_over(producer, tmp_path, monkeypatch)
    writer._delivered(KafkaError(KafkaError._PURGE_QUEUE, "Purged in queue"),
                      Message(topic="t.dlq-ledger"))
    with pytest.raises(DlqFencedError, match="this run was fenced"):
        writer.commit()
    assert producer.calls[-2:] == ["flush", "abort"]

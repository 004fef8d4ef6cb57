"""``LedgerWriter`` told that it was fenced, however confluent-kafka reports it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

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


def test_a_bare_system_error_from_flush_is_recognised_as_the_fencing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replays side by side: the later one fences the earlier, which must stop saying
    so (exit 1, audited as fenced), not with a traceback."""
    producer = FencedMidFlush()
    monkeypatch.setattr(consumer.kafka.dlq_ledger, "build_producer",
                        lambda *_args, **_kwargs: producer)
    config = tmp_path / "c.toml"
    config.write_text("")
    writer = LedgerWriter(load_settings(config, env={}), "t.dlq", "t.dlq-ledger")
    writer._opened_at = 0.0  # a transaction holds a replay (as after ``add``)
    with pytest.raises(DlqFencedError, match="this run was fenced"):
        writer.commit()
    assert writer.fenced
    assert producer.calls[-2:] == ["flush", "abort"]

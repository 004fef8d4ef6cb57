"""``KafkaTransactions`` over a scripted producer: how each librdkafka error is answered.

No broker here: the producer raises the errors librdkafka raises (retriable timeouts,
abortable and fatal errors), and the tests check what the run loop is told and what the
next call does. The real broker's behaviour is covered by the integration tests.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.config.settings import load_settings
from consumer.kafka.transactions import KafkaTransactions, transactional_producers
from consumer.pipeline.broker import BrokerError, TransactionAborted, TransactionInDoubt
from consumer.pipeline.outbox import Hop
from consumer.pipeline.records import InboundRecord, Republished
from retry_topics.routing import DeadLetter

TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
FENCED = KafkaError(KafkaError.ILLEGAL_GENERATION, "generation is over",
                    txn_requires_abort=True)
FATAL = KafkaError(KafkaError._FENCED, "producer fenced", fatal=True)


class ScriptedProducer:
    """Records the transaction calls; a step raises the errors queued for it, in turn."""

    def __init__(self, *, hang: str = "", **failures: list[KafkaError]) -> None:
        self.calls: list[str] = []
        self._failures = failures
        self._hang = hang  # a step that never returns (until ``released``)
        self.released = threading.Event()

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name == self._hang:
            self.released.wait(10)
            raise KafkaException(FATAL)  # what the fenced producer's call ends with
        queued = self._failures.get(name)
        if queued:
            raise KafkaException(queued.pop(0))

    def init_transactions(self, _timeout: float) -> None:
        self._step("init")

    def begin_transaction(self) -> None:
        self._step("begin")

    def produce(self, topic: str, **_kwargs: Any) -> None:
        self.calls.append(f"produce {topic}")

    def send_offsets_to_transaction(self, _offsets: Any, _metadata: Any,
                                    _timeout: float) -> None:
        self._step("offsets")

    def commit_transaction(self, _timeout: float) -> None:
        self._step("commit")

    def abort_transaction(self, _timeout: float) -> None:
        self._step("abort")

    def poll(self, _timeout: float) -> int:
        return 0


class GroupConsumer:
    def consumer_group_metadata(self) -> object:
        return object()


def _transactions(producer: ScriptedProducer) -> KafkaTransactions:
    return KafkaTransactions(lambda: producer, GroupConsumer())  # type: ignore[arg-type,return-value]


def _hop() -> Hop:
    record = InboundRecord("t", 0, 4, None, b"k", b"v", ())
    fate = Republished(record, DeadLetter(topic="t.dlq", reason="permanent", attempts=1),
                       "http.422", "dead_lettered")
    return Hop(fate, "t.dlq", b"k", b"v", [])


def test_a_transaction_produces_its_hops_and_commits_its_offsets() -> None:
    producer = ScriptedProducer()
    _transactions(producer).commit([_hop()], {("t", 0): 5})
    assert producer.calls == ["init", "begin", "produce t.dlq", "offsets", "commit"]


def test_a_commit_that_times_out_is_in_doubt_and_resumed_by_the_next_call() -> None:
    """librdkafka goes on committing in the background: the next call must ask again, not
    begin a second transaction with the same hops."""
    producer = ScriptedProducer(commit=[TIMED_OUT])
    transactions = _transactions(producer)
    with pytest.raises(TransactionInDoubt):
        transactions.commit([_hop()], {("t", 0): 5})
    transactions.commit([_hop()], {("t", 0): 5})
    assert producer.calls[1:] == ["begin", "produce t.dlq", "offsets", "commit", "commit"]


def test_a_fenced_commit_is_aborted_and_reported_as_such() -> None:
    producer = ScriptedProducer(offsets=[FENCED])
    transactions = _transactions(producer)
    with pytest.raises(TransactionAborted, match="generation"):
        transactions.commit([_hop()], {("t", 0): 5})
    transactions.commit([], {("t", 0): 5})
    assert producer.calls[1:] == ["begin", "produce t.dlq", "offsets", "abort",
                                  "begin", "offsets", "commit"]


def test_a_step_that_times_out_before_the_commit_aborts_the_transaction() -> None:
    """The offsets could not be sent within the step's time: nothing was committed, so the
    transaction is aborted rather than left open while the poll thread waits."""
    producer = ScriptedProducer(offsets=[TIMED_OUT])
    with pytest.raises(TransactionAborted):
        _transactions(producer).commit([_hop()], {("t", 0): 5})
    assert producer.calls[-1] == "abort"


def test_an_abort_that_times_out_is_finished_before_the_next_transaction() -> None:
    producer = ScriptedProducer(offsets=[FENCED], abort=[TIMED_OUT])
    transactions = _transactions(producer)
    with pytest.raises(TransactionAborted, match="aborting"):
        transactions.commit([_hop()], {("t", 0): 5})
    transactions.commit([], {("t", 0): 6})
    assert producer.calls[1:] == ["begin", "produce t.dlq", "offsets", "abort",
                                  "abort", "begin", "offsets", "commit"]


def test_a_fatal_error_ends_the_producer() -> None:
    producer = ScriptedProducer(commit=[FATAL])
    with pytest.raises(BrokerError, match="failed"):
        _transactions(producer).commit([_hop()], {("t", 0): 5})


def test_a_step_that_never_returns_gets_its_producer_replaced() -> None:
    """librdkafka's send_offsets_to_transaction can block past its timeout for good (issues
    5456 and 5511): the step is given up, a new producer (same transactional id, so it fences
    the old one) takes over, and the transaction is reported aborted, to be made again."""
    hung, fresh = ScriptedProducer(hang="offsets"), ScriptedProducer()
    made = iter([hung, fresh])
    transactions = KafkaTransactions(lambda: next(made), GroupConsumer(),  # type: ignore[arg-type,return-value]
                                     step_timeout_s=0.05, hung_grace_s=0.05)
    try:
        with pytest.raises(TransactionAborted, match="send_offsets_to_transaction did not return"):
            transactions.commit([_hop()], {("t", 0): 5})
        transactions.commit([_hop()], {("t", 0): 5})
    finally:
        hung.released.set()
    assert transactions.replaced == 1
    assert fresh.calls == ["init", "begin", "produce t.dlq", "offsets", "commit"]


def test_replacing_producers_say_once_that_kafka_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """While Kafka is down each transaction step times out and its producer is replaced,
    every STEP_TIMEOUT_S: each new producer said again that Kafka was unreachable."""
    configs: list[dict[str, Any]] = []

    def kafka_client(_cls: object, config: dict[str, Any], _kind: str) -> dict[str, Any]:
        configs.append(config)
        return config

    monkeypatch.setattr("consumer.kafka.clients.kafka_client", kafka_client)
    make = transactional_producers(load_settings(env={}))
    refused = "FAIL: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            make()
            configs[-1]["logger"].log(logging.ERROR, refused)
            configs[-1]["error_cb"](KafkaError(KafkaError._TRANSPORT, refused))
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert said == [f"Kafka is unreachable (producer): {refused} (further client lines are "
                    "counted until it is back)"]
    assert len({config["transactional.id"] for config in configs}) == 1

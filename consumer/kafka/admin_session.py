"""An admin client whose librdkafka log lines reach a logger, each distinct one once.

confluent-kafka hands a client's log lines to its ``logger`` only from ``poll``, and the
admin calls clinic-events makes (list topics, create topics, read offsets) block without
polling. So admin clients used to log raw to stderr: against an unreachable broker, ``topics
ensure``, ``run``, ``publish`` and ``lag`` printed a ``%3|...|FAIL|`` line every 0.5 s until
the call gave up, some 60 lines, unformatted and unparsable by log shippers. Here a daemon
thread polls the client while it is open (a poll that finds no log line just waits, so it
costs no CPU), and a ``ClientLog`` passes each distinct line once and counts its repeats.
The lines pass an ``AccessWatch`` first, so ``list_topics``, the first request of every
command, ends within a second or two when Kafka refuses our credentials or TLS handshake.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._metadata import ClusterMetadata

from consumer.config.settings import Settings
from consumer.kafka.access import AccessWatch, first_answer
from consumer.kafka.client_log import ClientLog
from consumer.kafka.clients import build_admin
from consumer.kafka.provisioning import TopicReport, ensure_topics

#: How long one poll of the serving thread waits for a log line; also the longest
#: ``close`` waits for the thread (every command that asks Kafka closes one or two).
SERVE_INTERVAL_S = 0.05


class AdminSession:
    """An admin client (``client``) served by a log-polling thread until ``close``."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._log = ClientLog()
        self._access = AccessWatch(self._log, settings.admin_config(**overrides))
        self.client: AdminClient = build_admin(settings, logger=self._access, **overrides)
        self._closed = threading.Event()
        self._server = threading.Thread(target=self._serve, name="kafka-admin-log",
                                        daemon=True)
        self._server.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            self.client.poll(SERVE_INTERVAL_S)

    def list_topics(self, timeout_s: float) -> ClusterMetadata:
        """The cluster's metadata; ``KafkaAccessRefused`` as soon as a login or TLS handshake
        is refused, else the client's ``KafkaException`` after ``timeout_s``."""
        return first_answer(lambda slice_s: self.client.list_topics(timeout=slice_s),
                            timeout_s, self._access)

    def close(self) -> None:
        """Stop serving, hand over the last lines, and report repeats not reported yet."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._server.join()
        self.client.poll(0)
        self._log.close()

    def __enter__(self) -> AdminSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def ensure_topics_logged(settings: Settings, *, timeout_s: float = 30.0) -> TopicReport:
    """``consumer.kafka.provisioning.ensure_topics`` with an :class:`AdminSession`'s client."""
    with AdminSession(settings) as session:
        return ensure_topics(settings, admin=session.client, list_topics=session.list_topics,
                             timeout_s=timeout_s)


def kafka_answers(settings: Settings, timeout_s: float) -> bool:
    """Ask Kafka for its metadata once: whether it answered within ``timeout_s``.

    A refused login or TLS handshake raises ``KafkaAccessRefused``, sooner: unlike silence,
    it does not cure itself.
    """
    with AdminSession(settings) as session:
        try:
            session.list_topics(timeout_s)
        except KafkaException:
            return False
    return True

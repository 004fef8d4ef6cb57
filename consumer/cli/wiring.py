"""Assembling the consumer from settings: the one place that wires ports to adapters.

``build_runner`` is used by ``clinic-events run``, by the demo and by integration tests (which
pass their own handler, clock or telemetry). It opens the dedup store first, so an
unreachable store stops start-up with a configuration error before Kafka is touched.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from consumer.config.settings import Settings
from consumer.dedup.store import DedupStore, open_dedup_store
from consumer.delivery.handlers import DeliveryHandler, build_handler
from consumer.events.codec import EventCodec
from consumer.kafka.admin_session import ensure_topics_logged
from consumer.kafka.clients import KafkaPublisher, build_consumer, build_producer
from consumer.kafka.group_consumer import KafkaGroupConsumer
from consumer.kafka.group_offsets import GroupOffsets, GroupQueryError, leftover_tiers
from consumer.kafka.status import KafkaStatusBoard
from consumer.kafka.transactions import KafkaTransactions, transactional_producers
from consumer.notify.digest import DigestPolicy
from consumer.notify.webhook import WebhookNotifier
from consumer.observability.messaging import MessagingClient
from consumer.observability.telemetry import Telemetry
from consumer.pipeline.breaker import OutageBreaker
from consumer.pipeline.flood_guard import DeadLetterGuard
from consumer.pipeline.lanes import InlineLane, Lanes
from consumer.pipeline.notifier import Notifier
from consumer.pipeline.ordering import EntityOrder
from consumer.pipeline.outbox import HopSender
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.ownership import Ownership
from consumer.pipeline.processing import RecordProcessor
from consumer.pipeline.runner import Runner
from retry_topics.clock import Clock, SystemClock
from retry_topics.durations import format_duration
from retry_topics.naming import retry_tier_delay_ms, status_topic_name

LOG = logging.getLogger("clinic_events.app")


@dataclass(slots=True)
class Assembly:
    """A runner and the resources that must be closed after it."""

    runner: Runner
    handler: DeliveryHandler
    store: DedupStore

    def close(self) -> None:
        self.handler.close()
        self.store.close()


def with_leftover_tiers(settings: Settings, listed: Iterable[str]) -> Settings:
    """``settings`` whose policy also consumes the retry tiers ``[retry] delays`` dropped.

    Why: after the delays change, the old tiers' topics still exist and may hold records
    that would otherwise never be processed. They are consumed (never published to) until
    the operator deletes them; each is named at start-up, with what it still holds.
    ``listed`` are the cluster's topics (from provisioning): Kafka is asked again, for the
    offsets, only when one of them is such a tier.
    """
    if not leftover_tiers(settings, listed):
        return settings
    try:
        with GroupOffsets(settings) as group:
            leftovers = group.stranded()
    except GroupQueryError as exc:  # e.g. credentials that may not read group offsets
        LOG.warning("could not look for retry tiers [retry] delays no longer include (records "
                    "left in one are not consumed): %s", exc)
        return settings
    if not leftovers:
        return settings
    for topic, pending in leftovers.items():
        LOG.warning("consuming %s too: [retry] delays (%s) no longer include it; %d record(s) "
                    "wait there past this group's offset; delete the topic once `lag` shows "
                    "it empty", topic,
                    ", ".join(format_duration(ms) for ms in settings.retry.delays_ms), pending)
    delays = tuple(retry_tier_delay_ms(settings.retry.main_topic, t) for t in leftovers)
    return replace(settings, retry=settings.retry.with_draining(delays))


def messaging_client(settings: Settings) -> MessagingClient:
    """Who the consumer is, for span attributes and metric labels (server, client id, group)."""
    return MessagingClient.of(settings.kafka.bootstrap_servers,
                              client_id=settings.kafka.client.get("client.id"),
                              group=settings.kafka.group_id, main_topic=settings.topics.main)


def instance_name() -> str:
    """How this ``run`` is named on the status topic: host, process and a random suffix (a
    restarted process states afresh)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def webhook_notifier(settings: Settings, clock: Clock, instance: str) -> Notifier | None:
    """The digest notifier of ``[notify]``, or None while ``webhook_url`` is unset."""
    notify = settings.notify
    if notify.webhook_url is None:
        return None
    policy = DigestPolicy(min_interval_ms=notify.min_interval_ms,
                          review_url=settings.serve.public_url, topic=settings.topics.main,
                          instance=instance)
    return WebhookNotifier(notify.webhook_url, policy, clock,
                           timeout_s=notify.timeout_ms / 1000)


def build_runner(settings: Settings, *, handler: DeliveryHandler | None = None,
                 tracer_provider: TracerProvider | None = None,
                 meter_provider: MeterProvider | None = None, clock: Clock | None = None,
                 store: DedupStore | None = None, ensure: bool = True,
                 drain_timeout_s: float = 30.0) -> Assembly:
    """Wire a runner for ``settings``; topics are created first unless ``ensure`` is False."""
    clock = clock or SystemClock()
    store = store or open_dedup_store(settings.dedup.store, settings.dedup.ttl_ms, clock)
    handler = handler or build_handler(settings)
    if ensure:
        report = ensure_topics_logged(settings)
        created = report.created
        if settings.topics.main in created:
            # A misspelt topics.main also lands here: say so, rather than consume quietly.
            LOG.warning("created missing topics: %s (if %s should have existed, check "
                        "topics.main)", ", ".join(created), settings.topics.main)
        elif created:
            LOG.info("created missing topics: %s", ", ".join(created))
        settings = with_leftover_tiers(settings, report.listed)
    telemetry = Telemetry(tracer_provider, meter_provider, messaging_client(settings))
    publisher = KafkaPublisher(build_producer(settings))
    group_consumer = build_consumer(
        settings, **{"enable.auto.commit": not settings.kafka.transactional_hops})
    consumer = KafkaGroupConsumer(group_consumer)
    transactions = None
    if settings.kafka.transactional_hops:
        try:
            transactions = KafkaTransactions(transactional_producers(settings),
                                             group_consumer)
        except BaseException:
            group_consumer.close()  # never subscribed: nothing to leave
            raise
    codec = EventCodec()

    outcomes = PendingOutcomes(store)
    breaker = OutageBreaker(settings.breaker, clock)
    guard = DeadLetterGuard(settings.dead_letter)
    telemetry.watch_the_system(lambda: breaker.is_open, lambda: guard.halted)
    ownership = Ownership()
    ordering = None  # [ordering] mode = "none": no store call, today's behaviour
    if settings.ordering.per_key:
        ordering = EntityOrder(store, settings.ordering, outcomes, clock,
                               settings.retry.dlq_topic)
        telemetry.watch_parked(lambda: store.parked_summary().keys)

    def lanes_factory(
        hops: HopSender,
    ) -> Lanes | InlineLane:
        processor = RecordProcessor(
            policy=settings.retry, handler=handler, outcomes=outcomes, hops=hops,
            telemetry=telemetry, clock=clock, rules=settings.classification,
            group_id=settings.kafka.group_id, codec=codec,
            breaker=breaker, guard=guard, ownership=ownership, ordering=ordering,
        )
        if settings.delivery.concurrency == 1:
            return InlineLane(processor.process_chunk, abandon=processor.abandon)
        return Lanes(settings.delivery.concurrency, processor.process_chunk,
                     processor.process_until, abandon=processor.abandon)

    instance = instance_name()
    runner = Runner(consumer=consumer, producer=publisher, policy=settings.retry,
                    lanes_factory=lanes_factory, outcomes=outcomes, clock=clock,
                    telemetry=telemetry, drain_timeout_s=drain_timeout_s,
                    breaker=breaker, guard=guard,
                    status=KafkaStatusBoard(publisher, status_topic_name(settings.topics.main)),
                    instance=instance, notifier=webhook_notifier(settings, clock, instance),
                    ownership=ownership, transactions=transactions, ordering=ordering)
    return Assembly(runner=runner, handler=handler, store=store)

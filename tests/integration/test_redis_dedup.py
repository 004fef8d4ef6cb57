"""The Redis dedup store against a real redis-server (the ``redis_url`` fixture)."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from consumer.dedup.store import (
    REDIS_CHAIN_PREFIX,
    REDIS_KEY_PREFIX,
    Outcome,
    RedisDedupStore,
    open_dedup_store,
)
from consumer.dev.local_kafka import free_port
from consumer.errors import ConfigError, DedupStoreError
from retry_topics.ordering import Link

TTL_MS = 60_000


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisDedupStore]:
    opened = RedisDedupStore(redis_url, TTL_MS)
    yield opened
    opened.close()


def _ids(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"evt-{run}-{n}" for n in range(count)]


def test_record_then_lookup_in_one_batch(store: RedisDedupStore, redis_url: str) -> None:
    """Recorded outcomes come back from one batched lookup, under the documented key, with TTL."""
    delivered, dead, unknown = _ids(3)
    store.record(delivered, "delivered")
    store.record(dead, "dead_lettered")
    assert store.lookup([delivered, dead, unknown]) == {
        delivered: "delivered", dead: "dead_lettered"}
    raw = redis.Redis.from_url(redis_url)
    try:
        assert raw.get(REDIS_KEY_PREFIX + delivered) == b"delivered"
        assert 0 < raw.pttl(REDIS_KEY_PREFIX + delivered) <= TTL_MS
    finally:
        raw.close()


def test_large_batches_span_several_chunks(store: RedisDedupStore) -> None:
    """A lookup of more ids than one MGET chunk still returns every recorded outcome."""
    ids = _ids(1_234)
    store.record_delivered(ids[::3])
    assert store.lookup(ids) == {event_id: "delivered" for event_id in ids[::3]}


def test_outcomes_expire_after_the_ttl(redis_url: str) -> None:
    """An outcome recorded with a short TTL disappears once Redis expires it."""
    short = RedisDedupStore(redis_url, 300)
    try:
        (event_id,) = _ids(1)
        short.record(event_id, "delivered")
        assert short.lookup([event_id]) == {event_id: "delivered"}
        deadline = time.monotonic() + 5.0
        while short.lookup([event_id]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert short.lookup([event_id]) == {}
    finally:
        short.close()


def test_delivered_is_never_overwritten_by_dead_lettered(store: RedisDedupStore) -> None:
    """``dead_lettered`` never replaces ``delivered``, but ``delivered`` replaces it."""
    first, second = _ids(2)
    store.record(first, "delivered")
    store.record(first, "dead_lettered")
    store.record_many([(first, "dead_lettered")])
    store.record(second, "dead_lettered")
    store.record_many([(second, "delivered")])
    assert store.lookup([first, second]) == {first: "delivered", second: "delivered"}


def test_two_instances_share_outcomes(redis_url: str) -> None:
    """Two consumer instances see each other's outcomes and forgets."""
    instance_a = RedisDedupStore(redis_url, TTL_MS)
    instance_b = RedisDedupStore(redis_url, TTL_MS)
    try:
        from_a, from_b = _ids(2)
        instance_a.record(from_a, "delivered")
        instance_b.record(from_b, "dead_lettered")
        expected = {from_a: "delivered", from_b: "dead_lettered"}
        assert instance_a.lookup([from_a, from_b]) == expected
        assert instance_b.lookup([from_a, from_b]) == expected
        instance_b.forget(from_a)
        assert instance_a.lookup([from_a]) == {}
    finally:
        instance_a.close()
        instance_b.close()


def test_racing_instances_never_lose_a_delivery(redis_url: str) -> None:
    """Concurrent dead-lettering by one instance never hides another instance's delivery."""
    ids = _ids(300)
    instance_a = RedisDedupStore(redis_url, TTL_MS)
    instance_b = RedisDedupStore(redis_url, TTL_MS)
    try:
        def record_each(store: RedisDedupStore, outcome: Outcome) -> None:
            for event_id in ids:
                store.record(event_id, outcome)

        threads = [threading.Thread(target=record_each, args=(instance_a, "delivered")),
                   threading.Thread(target=record_each, args=(instance_b, "dead_lettered"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert instance_b.lookup(ids) == dict.fromkeys(ids, "delivered")
    finally:
        instance_a.close()
        instance_b.close()


def test_open_dedup_store_connects_to_redis(redis_url: str) -> None:
    """``open_dedup_store`` opens a working Redis store from a redis:// URL."""
    opened = open_dedup_store(redis_url, TTL_MS)
    try:
        (event_id,) = _ids(1)
        opened.record(event_id, "delivered")
        assert opened.lookup([event_id]) == {event_id: "delivered"}
    finally:
        opened.close()


def test_unreachable_redis_is_a_config_error() -> None:
    """Opening a Redis URL nobody listens on fails fast with a ConfigError naming the setting."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"dedup\.store") as caught:
        open_dedup_store(url, TTL_MS)
    assert url in str(caught.value)
    assert time.monotonic() - started < 10


def test_a_failed_command_names_the_store(store: RedisDedupStore, redis_url: str) -> None:
    """The client's own message ("WRONGTYPE ...", "Timeout reading from host:port") does not
    say it came from the dedup store, and ``run`` stops on it with that message."""
    key = f"appt-{uuid.uuid4().hex[:8]}"
    raw = redis.Redis.from_url(redis_url)
    try:
        raw.rpush(REDIS_CHAIN_PREFIX + key, "not a chain")  # a value of the wrong type
    finally:
        raw.close()
    with pytest.raises(DedupStoreError,
                       match=rf"^dedup store {re.escape(redis_url)}: WRONGTYPE") as failed:
        store.join(key, Link(event_id="e1", topic="clinic.events.retry-5s", parked_at_ms=1))
    assert isinstance(failed.value.__cause__, redis.ResponseError)

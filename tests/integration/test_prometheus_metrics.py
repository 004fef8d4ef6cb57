"""``run`` with ``[metrics] prometheus_port``: a real scrape agrees with what happened."""

from __future__ import annotations

import signal
import socket
import subprocess
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

from retry_topics.naming import dlq_topic_name
from tests.integration.harness import (
    new_event,
    produce,
    read_topic,
    start_run_process,
    wait_until,
    write_config,
)

HANDLER = '''
from consumer import PermanentError


def deliver(event, context):
    """Delivers every event but those whose id says the EHR rejects them."""
    if context.event_id.startswith("rejected-"):
        raise PermanentError("EHR rejected the request: 422", error_class="http.422")
'''

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(url: str) -> Samples:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return {}
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        pairs = frozenset((key, raw.strip('"')) for key, _, raw in
                          (pair.partition("=") for pair in labels.rstrip("}").split(",") if pair))
        samples[(name, pairs)] = float(value)
    return samples


def _total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (found, pairs), value in samples.items()
               if found == name and wanted <= pairs)


def test_a_scrape_during_a_run_counts_what_was_consumed_delivered_and_dead_lettered(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
) -> None:
    """Six events delivered and three rejected (PermanentError) by a Python handler: the
    scrape shows nine consumed from the main topic, outcomes 6 delivered / 3 dead-lettered,
    three records in the DLQ, a group member, no lag left on the main topic, and a handler
    call timed per event; the endpoint listens on 127.0.0.1 only."""
    (tmp_path / "metrics_handler.py").write_text(textwrap.dedent(HANDLER))
    port = _free_port()
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                          extra=f'[metrics]\nprometheus_port = {port}\nlag_interval = "1s"\n')
    text = config.read_text().replace('url = "http://127.0.0.1:9/"',
                                      'handler = "metrics_handler:deliver"')
    config.write_text(text)
    good = [new_event() for _ in range(6)]
    rejected = [{**new_event(), "event_id": f"rejected-{n}"} for n in range(3)]
    url = f"http://127.0.0.1:{port}/metrics"
    run = start_run_process(config, tmp_path, "run")
    try:
        assert wait_until(lambda: bool(_scrape(url)), 60, 0.5), (
            tmp_path / "run.log").read_text()
        produce(kafka_bootstrap, topic_prefix, good + rejected)
        assert len(read_topic(kafka_bootstrap, dlq_topic_name(topic_prefix), 3)) == 3

        def settled() -> bool:
            samples = _scrape(url)
            return (_total(samples, "clinic_events_events_total") == 9
                    and _total(samples, "clinic_events_dlq_messages") == 3
                    and _total(samples, "clinic_events_consumer_lag_messages",
                               clinic_events_topic_kind="main") == 0
                    and _total(samples, "clinic_events_consumer_group_members") >= 1)

        assert wait_until(settled, 60, 0.5), _scrape(url)
        samples = _scrape(url)
        group = f"{topic_prefix}.group"
        assert _total(samples, "messaging_client_consumed_messages_total",
                      messaging_destination_name=topic_prefix,
                      messaging_consumer_group_name=group, messaging_system="kafka") == 9
        assert _total(samples, "clinic_events_events_total", outcome="delivered",
                      tier="main") == 6
        assert _total(samples, "clinic_events_events_total", outcome="dead_lettered",
                      tier="main") == 3
        assert _total(samples, "messaging_process_duration_seconds_count",
                      messaging_destination_name=topic_prefix) == 9
        assert _total(samples, "messaging_process_duration_seconds_count",
                      error_type="http.422") == 3
        assert _total(samples, "clinic_events_dlq_messages",
                      messaging_destination_name=dlq_topic_name(topic_prefix)) == 3
        assert _total(samples, "clinic_events_dlq_oldest_age_seconds") >= 0
        assert _total(samples, "clinic_events_lag_samples_total", outcome="ok") >= 1
        host = socket.gethostbyname(socket.gethostname())
        if host != "127.0.0.1":  # a machine whose name resolves to loopback proves nothing
            assert _scrape(f"http://{host}:{port}/metrics") == {}
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait(10)
    log = (tmp_path / "run.log").read_text()
    assert f"serving metrics at {url}" in log
    assert run.returncode == 0, log

"""``docker-compose.yml`` and ``Dockerfile`` keep their contract (checked without Docker).

There is no Docker engine where the suite runs, so this reads the files and checks what the
README and DESIGN.md promise: a KRaft Kafka (no ZooKeeper), a consumer that waits for it and
exports traces to Jaeger over OTLP/HTTP, and an image whose entry point is ``clinic-events``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _dockerfile_instruction(name: str) -> str:
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    found = [line.split(None, 1)[1] for line in lines if line.upper().startswith(name + " ")]
    assert found, f"Dockerfile has no {name}"
    return found[-1]


def _argv(instruction: str) -> list[str]:
    """The exec form (JSON array) or the shell form of ENTRYPOINT / CMD."""
    if instruction.lstrip().startswith("["):
        argv = json.loads(instruction)
        assert isinstance(argv, list)
        return [str(a) for a in argv]
    return shlex.split(instruction)


def test_the_stack_has_kafka_consumer_jaeger_and_downstream() -> None:
    assert {"kafka", "consumer", "jaeger", "downstream"} <= set(_services())


def test_kafka_is_a_kraft_combined_node_without_zookeeper() -> None:
    services = _services()
    assert not any("zookeeper" in name for name in services)
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = _env(kafka)
    assert not any("ZOOKEEPER" in key for key in env)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "127.0.0.1:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "127.0.0.1:9092:9092" in kafka["ports"]
    assert "healthcheck" in kafka


def test_consumer_waits_for_a_healthy_kafka_and_uses_the_internal_listener() -> None:
    services = _services()
    consumer = services["consumer"]
    assert consumer["depends_on"]["kafka"]["condition"] == "service_healthy"
    bootstrap = _env(consumer)["CLINIC_EVENTS_KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap.startswith("kafka:")
    assert f"//{bootstrap}" in _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert consumer["command"][0] == "run"


def test_consumer_delivers_to_the_simulator_it_starts() -> None:
    services = _services()
    url = _env(services["consumer"])["CLINIC_EVENTS_DELIVERY_URL"]
    assert url == "http://downstream:8080/events"
    command = services["downstream"]["command"]
    assert command[0] == "simulate-downstream"
    assert command[command.index("--port") + 1] == "8080"


def test_traces_go_to_jaeger_over_otlp_http() -> None:
    services = _services()
    env = _env(services["consumer"])
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert env["OTEL_SERVICE_NAME"] == "clinic-events"
    jaeger = services["jaeger"]
    image, _, tag = jaeger["image"].partition(":")
    assert image == "jaegertracing/all-in-one"
    assert tag, "pin the Jaeger version"
    assert tag != "latest", "pin the Jaeger version"
    assert _env(jaeger)["COLLECTOR_OTLP_ENABLED"] == "true"
    ports = " ".join(jaeger["ports"])
    assert "16686:16686" in ports
    assert "4318:4318" in ports


def test_the_image_runs_clinic_events() -> None:
    assert _dockerfile_instruction("FROM").startswith("python:3.11-slim")
    assert _argv(_dockerfile_instruction("ENTRYPOINT")) == ["clinic-events"]
    assert _argv(_dockerfile_instruction("CMD")) == [
        "run", "--config", "/etc/clinic-events/clinic-events.toml"]
    assert (ROOT / ".dockerignore").is_file()


def test_prometheus_scrapes_the_consumer_and_loads_the_alert_rules() -> None:
    """The job name, target, port and rule file the compose file and deploy/prometheus/ name
    must agree, or Prometheus scrapes nothing and the alert rules never see a series."""
    services = _services()
    prometheus = services["prometheus"]
    image, _, tag = prometheus["image"].partition(":")
    assert image == "prom/prometheus"
    assert tag, "pin the Prometheus version"
    assert tag != "latest", "pin the Prometheus version"
    assert all(port.startswith("127.0.0.1:") for port in prometheus["ports"])
    mounts = dict(volume.removesuffix(":ro").split(":", 1) for volume in prometheus["volumes"])
    config_path = mounts["./deploy/prometheus/prometheus.yml"]
    assert f"--config.file={config_path}" in prometheus["command"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    mounted_dir = config_path.rpartition("/")[0]
    for rule_file in config["rule_files"]:
        where = rule_file if rule_file.startswith("/") else f"{mounted_dir}/{rule_file}"
        assert mounts[f"./deploy/prometheus/{where.rpartition('/')[2]}"] == where
    (job,) = config["scrape_configs"]
    assert f'job="{job["job_name"]}"' in (ROOT / "deploy/prometheus/alerts.yml").read_text()
    consumer_env = _env(services["consumer"])
    port = consumer_env["CLINIC_EVENTS_METRICS_PROMETHEUS_PORT"]
    assert consumer_env["CLINIC_EVENTS_METRICS_PROMETHEUS_HOST"] == "0.0.0.0"
    assert job["static_configs"][0]["targets"] == [f"consumer:{port}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"

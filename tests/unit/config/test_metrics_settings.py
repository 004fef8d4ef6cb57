"""``[metrics]``: the Prometheus endpoint's port and host, the lag interval; file and env."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config.settings import load_settings
from consumer.errors import ConfigError


def test_the_endpoint_is_off_and_bound_to_loopback_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    metrics = load_settings(None, env={}).metrics
    assert metrics.prometheus_port is None
    assert metrics.prometheus_host == "127.0.0.1"
    assert metrics.lag_interval_ms == 15_000


def test_the_file_sets_it_and_the_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "clinic-events.toml"
    path.write_text('[metrics]\nprometheus_port = 9464\nlag_interval = "30s"\n')
    assert load_settings(path, env={}).metrics.prometheus_port == 9464
    env = {"CLINIC_EVENTS_METRICS_PROMETHEUS_PORT": "9999",
           "CLINIC_EVENTS_METRICS_PROMETHEUS_HOST": "0.0.0.0",
           "CLINIC_EVENTS_METRICS_LAG_INTERVAL": "5s"}
    metrics = load_settings(path, env=env).metrics
    assert (metrics.prometheus_port, metrics.prometheus_host, metrics.lag_interval_ms) == (
        9999, "0.0.0.0", 5_000)
    off = load_settings(path, env={"CLINIC_EVENTS_METRICS_PROMETHEUS_PORT": ""}).metrics
    assert off.prometheus_port is None


@pytest.mark.parametrize("port", ["0", "65536", "http", "-1"])
def test_a_port_that_is_not_a_tcp_port_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"metrics.prometheus_port must be a TCP port"):
        load_settings(None, env={"CLINIC_EVENTS_METRICS_PROMETHEUS_PORT": port})


def test_a_misspelt_metrics_key_names_the_valid_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="valid keys in \\[metrics\\]: prometheus_port, "
                                          "prometheus_host, lag_interval"):
        load_settings(None, env={"CLINIC_EVENTS_METRICS_PORT": "9464"})
    path = tmp_path / "clinic-events.toml"
    path.write_text('[metrics]\nlag_interval = "0s"\n')
    with pytest.raises(ConfigError, match=r"metrics\.lag_interval must be at least 1ms"):
        load_settings(path, env={})

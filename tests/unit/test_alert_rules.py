"""The shipped Prometheus alert rules are valid and fire exactly when their tests say.

``promtool`` (Debian package ``prometheus``, which ``.ci/run`` installs) checks
``deploy/prometheus/alerts.yml`` and the scrape configuration, and runs
``deploy/prometheus/alerts_test.yml``: series that fire each rule and series that must not.
The rules' metric names must be ones clinic-events makes or reserves.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from consumer.observability import messaging

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install the Debian package `prometheus` (.ci/run does)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=RULES, capture_output=True, text=True,
                          timeout=60, check=False)


@needs_promtool
def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    for args in (("check", "rules", "alerts.yml"), ("check", "config", "prometheus.yml")):
        result = _promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_each_alert_fires_and_stays_quiet_as_its_tests_say() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_that_does_not() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]
              if "alert" in rule}
    tests = yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert alerts == fired, f"alerts without a firing test: {alerts - fired}"
    assert alerts == quiet, f"alerts without a quiet test: {alerts - quiet}"


def _prometheus_name(name: str, unit: str) -> str:
    base = name.replace(".", "_")
    return base + {"s": "_seconds", "ms": "_milliseconds"}.get(unit, "")


def test_the_rules_use_only_metrics_clinic_events_makes_or_reserves() -> None:
    units = {messaging.CONSUMER_LAG_AGE: "s", messaging.RETRY_OVERDUE_AGE: "s",
             messaging.DLQ_OLDEST_AGE: "s"}
    names = [getattr(messaging, constant) for constant in messaging.__all__]
    known = {_prometheus_name(name, units.get(name, "")) for name in names
             if isinstance(name, str) and name.startswith("clinic_events.")}
    text = (RULES / "alerts.yml").read_text()
    labels = {"clinic_events_topic_kind"}  # a label of the lag gauges, not a metric
    used = set(re.findall(r"\b(clinic_events_[a-z_]+)\b", text)) - labels
    assert used, "no clinic-events metric in the rules"
    assert used <= known, f"unknown metrics in alerts.yml: {used - known}"

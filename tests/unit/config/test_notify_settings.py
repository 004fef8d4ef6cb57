"""``[notify]``: the webhook (off by default, a secret), the digest interval; file and env."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.cli.wiring import webhook_notifier
from consumer.config.settings import load_settings
from consumer.errors import ConfigError
from retry_topics.clock import ManualClock

HOOK = "https://hooks.example/services/T000/B000/s3cr3t"


def test_notifications_are_off_by_default(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, env={})
    assert settings.notify.webhook_url is None
    assert settings.notify.min_interval_ms == 60_000
    assert settings.notify.timeout_ms == 5_000
    assert webhook_notifier(settings, ManualClock(), "h:1") is None


def test_the_file_sets_it_and_the_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "clinic-events.toml"
    path.write_text(f'[notify]\nwebhook_url = "{HOOK}"\nmin_interval = "5m"\n'
                    '[serve]\npublic_url = "https://review.example/"\n')
    notify = load_settings(path, env={}).notify
    assert (notify.webhook_url, notify.min_interval_ms) == (HOOK, 300_000)
    env = {"CLINIC_EVENTS_NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9/hook",
           "CLINIC_EVENTS_NOTIFY_MIN_INTERVAL": "30s", "CLINIC_EVENTS_NOTIFY_TIMEOUT": "2s"}
    notify = load_settings(path, env=env).notify
    assert (notify.webhook_url, notify.min_interval_ms, notify.timeout_ms) == (
        "http://127.0.0.1:9/hook", 30_000, 2_000)
    assert load_settings(path, env={"CLINIC_EVENTS_NOTIFY_WEBHOOK_URL": ""}
                         ).notify.webhook_url is None
    assert webhook_notifier(load_settings(path, env={}), ManualClock(), "h:1") is not None


@pytest.mark.parametrize(("text", "message"), [
    ('webhook_url = "hooks.example/s3cr3t"', r"notify.webhook_url must be an http:// or "
                                              r"https:// URL \(an incoming webhook's address\)$"),
    ('min_interval = "0s"', r"notify.min_interval must be at least 1ms"),
    ('timeout = "soon"', r"notify.timeout"),
    ('channel = "#ops"', r"unknown key \[notify\] channel; valid keys in \[notify\]: "
                         r"webhook_url, min_interval, timeout"),
])
def test_mistakes_name_the_key_and_never_echo_the_url(tmp_path: Path, text: str,
                                                      message: str) -> None:
    path = tmp_path / "clinic-events.toml"
    path.write_text(f"[notify]\n{text}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(path, env={})
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(("url", "message"), [
    ("https://hooks.example/services/s3cr3t\n", r"notify.webhook_url holds a control character "
                                                r"or ends in a space \(a trailing newline\?\)$"),
    ("https://hooks.example/services/s3cr3t ", r"ends in a space"),
    ("https://[::1/s3cr3t", r"notify.webhook_url is not a valid URL: Invalid IPv6 URL$"),
    ("https://hooks.example:99999/s3cr3t", r"not a valid URL: Port out of range"),
    ("https:///s3cr3t", r"notify.webhook_url names no host$"),
    ("http://", r"notify.webhook_url names no host$"),
])
def test_a_url_no_client_could_post_to_is_refused_at_start_up(url: str, message: str) -> None:
    """A webhook URL from a secret file that ends in a newline used to start fine and kill
    the notification thread at the first dead letter, silently ending notifications."""
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(None, env={"CLINIC_EVENTS_NOTIFY_WEBHOOK_URL": url})
    assert "s3cr3t" not in str(caught.value)

"""Options shared by every subcommand that works on the configured topics."""

from __future__ import annotations

import errno
import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from consumer.config.settings import Settings, load_settings
from consumer.errors import KafkaUnreachable
from consumer.kafka.access import KafkaAccessRefused
from consumer.kafka.clients import check_client_settings
from consumer.kafka.provisioning import (
    ClientSettingsError,
    PartitionCountError,
    TopicLayoutError,
)
from retry_topics.durations import format_duration, parse_duration_ms
from retry_topics.errors import RetryTopicsError

F = TypeVar("F", bound=Callable[..., object])
EXIT_UNREACHABLE = 4  # Kafka could not be reached (every command that talks to it)
EXIT_REFUSED = 5  # Kafka refused our credentials, or the TLS handshake failed (idem)


def config_option(func: F) -> F:
    """``--config FILE``: the TOML settings file, with the documented fallbacks."""
    return click.option(
        "--config", "config_path",
        type=click.Path(dir_okay=False, path_type=Path), default=None,
        help="Settings file (TOML) [default: $CLINIC_EVENTS_CONFIG, else ./clinic-events.toml "
        "if present, else built-in defaults]. CLINIC_EVENTS_<SECTION>_<KEY> variables override it.",
    )(func)


def json_option(func: F) -> F:
    """``--json``: machine-readable output for scripts."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON for scripts instead of tables.")(func)


def settings_from(config_path: Path | None) -> Settings:
    """The settings, with the ``[kafka.client]`` properties checked by librdkafka itself."""
    settings = load_settings(config_path)
    check_client_settings(settings)
    return settings


class Duration(click.ParamType[int, object]):
    """A duration such as ``30s``, ``5m`` or ``1m30s``, converted to milliseconds.

    ``minimum_ms`` refuses shorter values as usage errors: a timeout of ``0s`` would
    otherwise fail later, blamed on the broker.
    """

    name = "duration"

    def __init__(self, minimum_ms: int = 0) -> None:
        self.minimum_ms = minimum_ms

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            ms = value
        else:
            try:
                ms = parse_duration_ms(str(value))
            except RetryTopicsError as exc:
                self.fail(str(exc), param, ctx)
        if ms < self.minimum_ms:
            self.fail(f"must be at least {format_duration(self.minimum_ms)}, got {value!r}",
                      param, ctx)
        return ms


class Rate(click.FloatRange):
    """A rate per second: a finite number greater than 0.

    ``float()`` reads ``nan`` and ``inf`` as well, and both pass the range check (``nan``
    compares false with every bound): ``publish`` would then fail in its token bucket with a
    traceback, and ``dlq replay`` would run unthrottled and write them, invalid JSON, into
    its audit record.
    """

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(self, value: float, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        rate = super().convert(value, param, ctx)
        if not math.isfinite(rate):
            self.fail(f"{value!r} is not a finite number > 0.", param, ctx)
        return rate


def layout_exit_code(error: TopicLayoutError | KafkaUnreachable) -> int:
    """2 when the configuration does not fit (too few partitions, client settings librdkafka
    refuses), 4 when Kafka cannot be reached, 5 when it refuses our credentials or TLS,
    else 1 (a creation refused)."""
    if isinstance(error, PartitionCountError | ClientSettingsError):
        return 2
    if isinstance(error, KafkaAccessRefused):
        return EXIT_REFUSED
    return EXIT_UNREACHABLE if isinstance(error, KafkaUnreachable) else 1


def listen_failure(error: OSError, host: str, port: int) -> str:
    """What went wrong opening a listening socket, in ``kafka start``'s words for a port in
    use."""
    if error.errno == errno.EADDRINUSE:
        return f"port {port} is already in use; choose another with --port"
    return f"cannot listen on {host}:{port}: {error.strerror or error}"

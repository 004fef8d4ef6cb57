"""Operational limits as values: when the downstream counts as down, when dead letters stop.

``BreakerPolicy`` configures ``consumer.pipeline.breaker`` (the outage breaker);
``FloodGuardPolicy`` configures ``consumer.pipeline.flood_guard`` (Arroyo's ``DlqLimit`` in
spirit). Both are validated once, when built from ``[breaker]`` and ``[dead_letter]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from retry_topics.errors import PolicyError

#: Error classes of calls that fail because the downstream system does, not the event.
SYSTEMIC_ERRORS: tuple[str, ...] = (
    "connection", "timeout", "http.429", "http.502", "http.503", "http.504",
    "builtins.ConnectionError", "builtins.ConnectionRefusedError",
    "builtins.ConnectionResetError", "builtins.ConnectionAbortedError", "builtins.TimeoutError",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When the downstream counts as down, and how often it is probed then."""

    enabled: bool = True
    window_calls: int = 20
    min_failures: int = 5
    min_keys: int = 3
    failure_ratio: float = 0.8
    first_probe_ms: int = 1_000
    max_probe_ms: int = 8_000
    systemic: tuple[str, ...] = SYSTEMIC_ERRORS
    error_after_ms: int = 900_000  # ``lag`` says ERR, not WARN, once it has been down this long

    def __post_init__(self) -> None:
        for name in ("window_calls", "min_failures", "min_keys", "first_probe_ms",
                     "max_probe_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PolicyError(f"breaker.{name} must be a whole number >= 1, "
                                         f"got {value!r}")
        if self.min_failures > self.window_calls:
            raise PolicyError(
                f"breaker.min_failures ({self.min_failures}) must be <= breaker.window_calls "
                f"({self.window_calls})")
        if not 0.0 < self.failure_ratio <= 1.0:
            raise PolicyError(f"breaker.failure_ratio must be > 0 and <= 1, "
                                     f"got {self.failure_ratio!r}")
        if self.max_probe_ms < self.first_probe_ms:
            raise PolicyError(
                f"breaker.max_probe ({self.max_probe_ms} ms) must be >= breaker.first_probe "
                f"({self.first_probe_ms} ms)")


@dataclass(frozen=True, slots=True, kw_only=True)
class FloodGuardPolicy:
    """How many dead letters mean "stop, this is a deploy mistake"; 0 turns a rule off."""

    max_consecutive: int = 20
    max_ratio: float = 0.5
    window: int = 100

    def __post_init__(self) -> None:
        for name in ("max_consecutive", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PolicyError(f"dead_letter.{name} must be a whole number >= 0, "
                                            f"got {value!r}")
        if not 0.0 <= self.max_ratio <= 1.0:
            raise PolicyError(f"dead_letter.max_ratio must be from 0 to 1, "
                                        f"got {self.max_ratio!r}")

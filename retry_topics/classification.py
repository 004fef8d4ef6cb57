"""Deciding whether a failure is worth retrying.

A failure is either **transient** (the same record may succeed later: a timeout, a 503, a
rate limit) or **permanent** (it will fail the same way every time: a 400, a validation
error). Transient failures travel through the retry tiers; permanent ones go straight to the
dead-letter topic, because retrying them only delays the operator who has to look at them.

Three pure building blocks:

* :func:`classify_http_status` follows the delivery contract: 2xx is success (``None``);
  408, 425, 429 and 5xx are transient; every other status (other 4xx, and 1xx/3xx, which a
  webhook endpoint should never answer with) is permanent.
* :func:`parse_retry_after_ms` reads an HTTP ``Retry-After`` value (delta-seconds or an
  HTTP-date) into a wait in milliseconds, or ``None`` when the value is unusable.
* :class:`ExceptionRules` classifies an arbitrary exception by dotted class names such as
  ``"builtins.TimeoutError"`` or ``"mypkg.errors.Boom"``. The exception's MRO is walked from
  the most specific class to ``BaseException``; the first class named in a rule decides, and
  if a class is named in both lists, permanent wins. Matching by name keeps this module free
  of imports from the application.
"""

from __future__ import annotations

import email.utils
import math
import re
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum

from retry_topics.errors import PolicyError

__all__ = [
    "Classification",
    "ExceptionRules",
    "classify_exception",
    "classify_http_status",
    "parse_classification",
    "parse_retry_after_ms",
    "qualified_name",
]


class Classification(StrEnum):
    """Whether a failure is worth retrying; the value is the ``clinic.classification`` header."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


#: 4xx statuses that mean "try again later" rather than "your request is wrong".
_TRANSIENT_CLIENT_STATUSES = frozenset({408, 425, 429})
_DELTA_SECONDS = re.compile(r"-?[0-9]+")


def classify_http_status(status: int) -> Classification | None:
    """Classify an HTTP response status; ``None`` means the delivery succeeded (2xx)."""
    if 200 <= status <= 299:
        return None
    if status in _TRANSIENT_CLIENT_STATUSES or 500 <= status <= 599:
        return Classification.TRANSIENT
    return Classification.PERMANENT


def parse_retry_after_ms(value: str, now_ms: int) -> int | None:
    """Parse a ``Retry-After`` header into milliseconds from ``now_ms``.

    Accepts delta-seconds (``"120"``) or an HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``).
    A date in the past, or a negative number, gives 0. Anything unparseable gives ``None``,
    so the caller falls back to its own schedule instead of failing.
    """
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return max(0, int(text)) * 1000
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime and "-0000" dates are naive; HTTP-dates are always UTC.
        when = when.replace(tzinfo=UTC)
    timestamp = when.timestamp()
    if not math.isfinite(timestamp):
        return None
    return max(0, math.ceil(timestamp * 1000) - now_ms)


def parse_classification(value: str, what: str = "classification") -> Classification:
    """``value`` as a :class:`Classification`: a member, or its text (``"transient"``) as a
    configuration file or a caller without the enum gives it; anything else is a PolicyError."""
    try:
        return Classification(value)
    except ValueError:
        raise PolicyError(
            f"unknown {what} {value!r}; valid values are {', '.join(Classification)}"
        ) from None


def qualified_name(cls: type) -> str:
    """Dotted path of a class as used in rules and headers, e.g. ``builtins.ValueError``."""
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExceptionRules:
    """Classify exceptions by the dotted names of their classes and base classes."""

    transient: tuple[str, ...] = ()
    permanent: tuple[str, ...] = ()
    default: Classification = Classification.TRANSIENT

    def __post_init__(self) -> None:
        default = parse_classification(self.default, "default classification")
        object.__setattr__(self, "default", default)
        for kind, names in (("transient", self.transient), ("permanent", self.permanent)):
            for name in names:
                if not isinstance(name, str) or "." not in name.strip(".") or " " in name:
                    raise PolicyError(
                        f"{kind} exception rule {name!r} must be a dotted class path such as "
                        "'builtins.ValueError' or 'mypkg.errors.Boom'"
                    )
        object.__setattr__(self, "transient", tuple(self.transient))
        object.__setattr__(self, "permanent", tuple(self.permanent))

    def classify_exception(self, exc: BaseException) -> Classification:
        """Classification of ``exc``: the most specific class named in a rule decides."""
        transient = frozenset(self.transient)
        permanent = frozenset(self.permanent)
        for cls in type(exc).__mro__:
            name = qualified_name(cls)
            if name in permanent:
                return Classification.PERMANENT
            if name in transient:
                return Classification.TRANSIENT
        return self.default


def classify_exception(exc: BaseException, rules: ExceptionRules) -> Classification:
    """Function form of :meth:`ExceptionRules.classify_exception`."""
    return rules.classify_exception(exc)

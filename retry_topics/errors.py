"""Exceptions raised by the retry-topic model.

Every error this package raises derives from one root, so callers can catch the whole family
with a single ``except RetryTopicsError``. The leaves also derive from :class:`ValueError`,
because each of them means "this value is not acceptable" and code that already handles
``ValueError`` (for example settings parsers) keeps working::

    Exception
    └── RetryTopicsError
        ├── PolicyError   (also ValueError)  invalid policy, duration or topic name
        └── HeaderError   (also ValueError)  a header on the wire is malformed

The messages are written for operators: they name the offending value and list what would
have been accepted. Errors from other libraries are wrapped with ``raise ... from exc`` so the
original cause stays attached.
"""

from __future__ import annotations

__all__ = ["HeaderError", "PolicyError", "RetryTopicsError"]


class RetryTopicsError(Exception):
    """Root of every error raised by ``retry_topics``."""


class PolicyError(RetryTopicsError, ValueError):
    """A retry policy, a duration or a topic name is invalid."""


class TopicNameError(PolicyError):
    """A topic name, given or derived from the main topic's, is not one Kafka accepts."""


class HeaderError(RetryTopicsError, ValueError):
    """A record header could not be encoded or decoded (for example a non-decimal integer).

    ``header`` names the offending header when there is one, so the runtime can report it
    (for example as the DLQ reason detail) without parsing the message.
    """

    def __init__(self, message: str, *, header: str | None = None) -> None:
        super().__init__(message)
        self.header = header

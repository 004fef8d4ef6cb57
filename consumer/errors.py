"""Exceptions of the clinic-events application.

One root, small leaves, stdlib bases where they fit. The leaves that belong to one layer live
beside the code that raises them (module named on the right); the rest are defined here::

    ClinicEventsError
    ├── ConfigError (ValueError)            bad configuration; the CLI exits with code 2
    │   └── DedupStoreUnavailable           the dedup store could not be opened (unreachable,
    │       │                               a refused login, a URL its client cannot use)
    │       └── DedupStoreMissing           a SQLite store a tool must not create is not
    │                                       there (consumer.dedup.store)
    ├── DedupStoreError                     the dedup store failed a read or a write
    │   └── DiscardedKeysStillHeld          ... after a discard committed: the discard is
    │                                       done, its keys not yet released
    ├── UndecodableRecord (ValueError)      bytes that are not a clinic event; keeps the raw bytes
    ├── InvalidEvent (ValueError)           an event that does not fit the schema (publish, encode)
    ├── KafkaUnreachable                    no broker answered the first request in time; every
    │   │                                   command that talks to Kafka exits with code 4
    │   └── KafkaAccessRefused              Kafka answered but refused our credentials, or the
    │                                       TLS handshake failed (exit 5) (consumer.kafka.access)
    ├── TopicLayoutError                    topics do not fit or could not be created
    │   │                                   (consumer.kafka.provisioning)
    │   ├── PartitionCountError             existing topics have too few partitions (exit 2)
    │   └── ClientSettingsError (ValueError) librdkafka refused [kafka.client] (exit 2)
    ├── DlqIoError                          the DLQ could not be read or a replay committed
    │                                       (consumer.kafka.dlq_io)
    ├── DlqFilterError (ValueError)         a DLQ filter, time or replay target that cannot be
    │                                       used (consumer.ops.dlq.model)
    ├── GroupQueryError (RuntimeError)      Kafka could not be asked about the group
    │                                       (consumer.kafka.group_offsets)
    ├── FatalError (RuntimeError)           run cannot go on safely (a republish refused)
    │                                       (consumer.pipeline.runner)
    ├── LocalKafkaError (RuntimeError)      the local broker could not be started or stopped
    │   └── MissingToolError                Java 17 or Maven is not installed
    └── HandlerError                        raised by delivery handlers to state intent
        ├── TransientError                  try again later (timeouts, 429, 5xx, ...)
        └── PermanentError                  never retry (invalid request, ...)

The pure ``retry_topics`` package has its own root, ``retry_topics.errors.RetryTopicsError``
(policy, duration, topic-name and header errors), so it stays usable on its own.

Handlers raise ``TransientError`` / ``PermanentError``; any other exception is classified by
the configured rules. Foreign errors are wrapped with ``raise ... from exc``.
"""

from __future__ import annotations


class ClinicEventsError(Exception):
    """Root of every error this application raises on purpose."""


class ConfigError(ClinicEventsError, ValueError):
    """Configuration that cannot be used; the message names the key and the valid values."""


class UndecodableRecord(ClinicEventsError, ValueError):
    """A Kafka record value that is not a clinic event we can read.

    The raw bytes are kept so the record can go to the dead-letter topic unchanged.
    """

    def __init__(self, reason: str, raw: bytes | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class InvalidEvent(ClinicEventsError, ValueError):
    """An event that does not fit the schema; ``field`` names the offending field path."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class DedupStoreUnavailable(ConfigError):
    """The dedup store could not be opened: at start-up a configuration error (exit 2); on
    the review page, the store's failure, not Kafka's."""


class DedupStoreError(ClinicEventsError):
    """The dedup store failed a read or a write; the message names the store (password
    masked), since the client's own message ("Timeout reading from host:port") does not."""


class DiscardedKeysStillHeld(DedupStoreError):
    """The dedup store failed to release the keys of a discard that is committed: done, but
    the next discard has to release them (its message says so)."""


class KafkaUnreachable(ClinicEventsError):
    """No broker answered the first request of a command (list topics, the DLQ's metadata) in
    time.

    Not something the configuration can fix (unless the bootstrap address is wrong): every
    command that talks to Kafka exits with its "Kafka could not be reached" code (4).
    """


class LocalKafkaError(ClinicEventsError, RuntimeError):
    """The project-local Kafka broker could not be started, stopped or inspected."""


class MissingToolError(LocalKafkaError):
    """A tool the local broker needs (Java 17, Maven) is not installed."""


class HandlerError(ClinicEventsError):
    """Raised by a delivery handler to say how a failure must be treated."""

    classification: str = "transient"

    def __init__(self, message: str, *, error_class: str | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class or type(self).__name__


class TransientError(HandlerError):
    """The downstream system may succeed later: retry through the retry tiers.

    ``retry_after_ms`` carries a downstream ``Retry-After`` hint, if any.
    """

    classification = "transient"

    def __init__(
        self, message: str, *, error_class: str | None = None, retry_after_ms: int | None = None
    ) -> None:
        super().__init__(message, error_class=error_class)
        self.retry_after_ms = retry_after_ms


class PermanentError(HandlerError):
    """Retrying cannot help (the request is invalid): dead-letter at once."""

    classification = "permanent"

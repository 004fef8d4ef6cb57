"""clinic-events: deliver clinic integration events from Kafka through transient failures.

What a handler author needs, in one import: the handler contract (``DeliveryHandler``,
``DeliveryContext``), the errors that state intent (``TransientError``, ``PermanentError``),
the event's Python shape (``EventRecord``, ``EVENT_TYPES``) and ``EventPublisher`` for
publishing events from Python. Everything else lives in the layer subpackages.
"""

from consumer.delivery.handlers import DeliveryContext, DeliveryHandler
from consumer.errors import ClinicEventsError, PermanentError, TransientError
from consumer.events.codec import EVENT_TYPES, EventRecord
from consumer.events.model import ENTITY_KEY_FIELD
from consumer.kafka.publishing import EventPublisher

__all__ = [
    "ENTITY_KEY_FIELD",
    "EVENT_TYPES",
    "ClinicEventsError",
    "DeliveryContext",
    "DeliveryHandler",
    "EventPublisher",
    "EventRecord",
    "PermanentError",
    "TransientError",
]

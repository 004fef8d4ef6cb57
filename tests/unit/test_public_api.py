"""The top-level package offers handler authors what they need in one import."""

from __future__ import annotations

import consumer


def test_the_handler_authors_api_is_importable_from_the_top_level_package() -> None:
    for name in consumer.__all__:
        assert getattr(consumer, name) is not None, name
    assert {"TransientError", "PermanentError", "DeliveryContext", "EventPublisher",
            "EventRecord", "EVENT_TYPES"} <= set(consumer.__all__)
    assert issubclass(consumer.TransientError, consumer.ClinicEventsError)

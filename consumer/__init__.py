"""clinic-events: deliver clinic integration events from Kafka through transient failures."""

__all__: list[str] = []

"""The review page, ``clinic-events serve``: dead letters for operations staff.

Starlette with Jinja2 templates and plain HTML forms (no scripts at all); Kafka is reached
through a :class:`consumer.web.source.ReviewSource`, so the pages are tested without a broker.
"""

__all__: list[str] = []

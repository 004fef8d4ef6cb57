"""Avro schemas of the clinic integration event envelope, one file per version.

Files are named ``clinic_event.v<N>.avsc``. Every version ever written to Kafka stays here,
so a reader can resolve any record by its schema fingerprint (see ``consumer.events.codec``).
"""

__all__: list[str] = []

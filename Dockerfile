# The clinic-events image: the consumer (`run`) and the simulated downstream
# (`simulate-downstream`) share it; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# confluent-kafka and fastavro ship manylinux wheels, so no compiler is needed.
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY retry_topics ./retry_topics
COPY schemas ./schemas
RUN pip install . && rm -rf /src

# Defaults baked in; docker-compose.yml mounts the example over it so edits need no rebuild.
COPY clinic-events.example.toml /etc/clinic-events/clinic-events.toml

# Unprivileged user; the working folder holds the SQLite dedup store (.clinic-events/).
RUN useradd --system --create-home --home-dir /var/lib/clinic-events clinic-events
USER clinic-events
WORKDIR /var/lib/clinic-events

ENTRYPOINT ["clinic-events"]
CMD ["run", "--config", "/etc/clinic-events/clinic-events.toml"]

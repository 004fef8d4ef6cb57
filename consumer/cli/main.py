"""The ``clinic-events`` command line: one entry point, one subcommand per operator job.

Each job's command lives in its own module under ``consumer.cli``; this module only
assembles them and maps application errors to exit codes (2 for bad configuration or usage,
1 for a failure of the job itself), with one readable line on standard error.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from consumer.cli.demo import demo_command
from consumer.cli.dlq import dlq_group
from consumer.cli.kafka import kafka_group
from consumer.cli.lag import lag_command
from consumer.cli.publish import publish_command
from consumer.cli.run import run_command
from consumer.cli.serve import serve_group
from consumer.cli.simulate import simulate_command
from consumer.cli.topics import topics_group
from consumer.errors import ConfigError, InvalidEvent, LocalKafkaError
from consumer.pipeline.outcome_log import configure_logging


class _ErrorMappingGroup(click.Group):
    """A click group that turns our errors into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"clinic-events: configuration error: {exc}", err=True)
            sys.exit(2)
        except (LocalKafkaError, InvalidEvent) as exc:
            click.echo(f"clinic-events: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_ErrorMappingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clinic-events", prog_name="clinic-events")
def main() -> None:
    """Deliver clinic integration events from Kafka, surviving transient failures."""
    # Every command's log lines, librdkafka's and the OpenTelemetry SDK's warnings included,
    # in one format (JSON off a terminal); ``run`` sets its own level, the demo its own file.
    configure_logging("WARNING")


main.add_command(kafka_group)
main.add_command(dlq_group)
main.add_command(lag_command)
main.add_command(publish_command)
main.add_command(simulate_command)
main.add_command(topics_group)
main.add_command(run_command)
main.add_command(serve_group)
main.add_command(demo_command)

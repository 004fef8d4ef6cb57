"""One module per ``clinic-events`` subcommand; ``consumer.cli.main`` assembles them."""

__all__: list[str] = []

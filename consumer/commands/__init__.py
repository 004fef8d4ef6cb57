"""One module per ``clinic-events`` subcommand; ``consumer.cli`` assembles them."""

__all__: list[str] = []

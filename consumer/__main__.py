"""``python -m consumer`` runs the ``clinic-events`` command line."""

from consumer.cli.main import main

main()

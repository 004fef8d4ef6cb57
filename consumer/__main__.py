"""``python -m consumer`` runs the ``clinic-events`` command line."""

from consumer.cli import main

main()

"""``python -m slimkit`` runs the command line."""

from slimkit.core.cli import main

main()

"""``python -m temcal`` runs the command line."""

from temcal.cli.app import main

main()

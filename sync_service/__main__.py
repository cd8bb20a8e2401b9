"""Allows ``python -m sync_service``."""

from sync_service.cli.main import main

main()

"""Allows ``python -m sync_service``."""

from sync_service.cli import main

main()

"""The ``sync-service`` command line."""

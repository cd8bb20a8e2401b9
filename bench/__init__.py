"""The performance benchmark of sync-service (see README.md in this folder)."""

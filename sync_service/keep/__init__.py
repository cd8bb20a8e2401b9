"""Keeping Qdrant in step with upstream: watch mode, backfill, forget, verify, reindex."""

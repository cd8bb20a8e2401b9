"""Qdrant, downstream: collections, aliases and point writes (the only door to Qdrant)."""

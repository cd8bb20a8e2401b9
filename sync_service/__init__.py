"""sync-service: keeps a Qdrant collection in step with what Mixpeek indexes."""

__version__ = "0.1.0"

"""Mixpeek\x27s v1 API (namespaces, buckets, collections, documents) behind the upstream port."""

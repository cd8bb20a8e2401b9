"""Mixpeek, upstream of the service: the HTTP plumbing every API version shares (admission,
retries, transport, errors) and one adapter per API version (``gen_b``)."""

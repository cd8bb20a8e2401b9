"""The emulator of Mixpeek's v1 API (2025-2026): namespaces, buckets, batches, collections,
documents, tasks and organization webhooks, served by ``sync-service emulator --api v1``.

Split by job: ``config`` (the v1 knobs), ``model`` (records and task progression),
``extractors`` (the vector indexes an extractor declares), ``documents`` (what an object
becomes, and how a document is rendered), ``store`` (the in-memory state), ``listing``
(filters, sort and cursor paging), ``dispatcher`` (outbound webhooks), the ``routes_*``
modules (one resource family each), ``controls`` (``/_emulator``) and ``app`` (the factory and
its request pipeline). Nothing here is imported by the service.
"""

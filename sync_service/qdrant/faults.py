"""The exceptions the Qdrant sink raises, in a module that does not load ``qdrant_client``.

The engine catches them; it can import them without paying for Qdrant's client (most of a
second), which a ``run`` with nothing to do never loads. ``errors.py`` says which of Qdrant's
failures become which.
"""

from __future__ import annotations


class SinkUnavailable(Exception):
    """Qdrant did not answer, or failed on its side (5xx, timeout): try again later.

    Nothing may be recorded as synced after this: the write may or may not have landed, and a
    redo with the same point ids settles it either way.
    """


class BadInput(Exception):
    """Qdrant refused a request as malformed (a point's fault, not Qdrant's)."""

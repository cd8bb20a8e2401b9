"""Qdrant's client library, imported here once, with its models built when first used.

qdrant-client defines some 400 pydantic models, and at import builds a validator for every
one of them (then rebuilds each in a loop, ``qdrant_client/http/__init__.py``): ~0.5 s of
CPU, of which this process uses a few dozen models. ``run`` imports it in a thread beside
the loop's first requests, and the two share one GIL, so that half second slowed the first
requests. Imported from here, the models are made with pydantic's ``defer_build`` setting
(each is built when first used) and the rebuild loop is skipped: ~0.2 s of import, and some
25 ms more at the first write (a run builds about 20 of them).

Nothing else changes: a deferred model validates, dumps and refuses exactly as a built one
(pydantic builds it before the first such call). When qdrant-client is
already imported, or its layout is not the one this was written for, the plain import runs.
The rest of the package imports Qdrant's client from here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from pydantic import BaseModel

__all__ = [
    "AsyncQdrantClient",
    "ResponseHandlingException",
    "UnexpectedResponse",
    "build_now",
    "models",
]

#: qdrant-client's module whose ``update_forward_refs`` its import calls for every model.
_COMPAT = "qdrant_client._pydantic_compat"


def _import_deferred() -> None:
    """Import qdrant_client with its models' builds deferred (see the module's docstring)."""
    if "qdrant_client" in sys.modules:
        return
    spec = importlib.util.find_spec("qdrant_client")
    compat_file = Path(spec.origin).parent / "_pydantic_compat.py" if spec and spec.origin else None
    if compat_file is None or not compat_file.is_file():
        return  # another layout: the plain import
    # The compatibility module is loaded ahead of its package, so that the package's import
    # finds it (and the no-op in it) instead of loading it.
    compat_spec = importlib.util.spec_from_file_location(_COMPAT, compat_file)
    if compat_spec is None or compat_spec.loader is None:
        return
    compat = importlib.util.module_from_spec(compat_spec)
    compat_spec.loader.exec_module(compat)
    rebuild = getattr(compat, "update_forward_refs", None)
    if rebuild is None:
        return
    config = BaseModel.model_config
    sys.modules[_COMPAT] = compat
    compat.update_forward_refs = lambda *_args, **_kwargs: None  # type: ignore[attr-defined]
    # Read by every model class made meanwhile (pydantic merges its bases' configs): those
    # are qdrant-client's, and any other thread's, which deferring does not change either.
    BaseModel.model_config = {**config, "defer_build": True}
    try:
        import qdrant_client
    except BaseException:
        sys.modules.pop(_COMPAT, None)
        raise
    finally:
        BaseModel.model_config = config
        compat.update_forward_refs = rebuild  # type: ignore[attr-defined]
    qdrant_client._pydantic_compat = compat


def build_now(*used: type[BaseModel]) -> None:
    """Build these deferred models now, in the thread importing the caller, rather than on
    the event loop at their first use (a few milliseconds each, every request waiting)."""
    for cls in used:
        if not cls.__pydantic_complete__:
            cls.model_rebuild()


_import_deferred()

from qdrant_client import AsyncQdrantClient, models  # noqa: E402
from qdrant_client.http.exceptions import (  # noqa: E402
    ResponseHandlingException,
    UnexpectedResponse,
)

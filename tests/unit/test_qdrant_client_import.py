"""Qdrant's client imported with its models built on first use (sync_service/qdrant/client.py).

Each case runs in a fresh interpreter: the import it checks happens once per process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_models_are_deferred_and_behave_as_built() -> None:
    out = _run(
        """
        import asyncio
        from pydantic import BaseModel, ValidationError
        from sync_service.qdrant.client import AsyncQdrantClient, models
        import qdrant_client, qdrant_client._pydantic_compat as compat

        # deferred: nothing built yet, and what the import changed is restored
        assert not models.PointStruct.__pydantic_complete__
        assert "defer_build" not in BaseModel.model_config
        assert compat.update_forward_refs.__name__ == "update_forward_refs"
        assert qdrant_client._pydantic_compat is compat
        # a model refuses bad input as a built one does, and is built by then
        try:
            models.VectorParams(size="eight", distance=models.Distance.COSINE)
        except ValidationError as exc:
            assert "size" in str(exc)
        else:
            raise AssertionError("accepted a bad size")
        assert models.VectorParams.__pydantic_complete__
        # a forward reference (Filter -> FieldCondition) resolves on first use
        flt = models.Filter(must=[{"key": "k", "match": {"value": 1}}])
        assert isinstance(flt.must[0], models.FieldCondition)
        constructed = models.PointStruct.model_construct(id=1, vector={"v": [1.0]}, payload={})
        assert constructed.model_dump()["vector"] == {"v": [1.0]}

        async def round_trip():
            client = AsyncQdrantClient(location=":memory:")
            params = models.VectorParams(size=2, distance=models.Distance.COSINE)
            await client.create_collection("c", vectors_config={"v": params})
            await client.upsert(
                "c", [models.PointStruct(id=i, vector={"v": [1.0, i]}, payload={"i": i})
                      for i in range(3)]
            )
            hits = await client.query_points("c", query=[1.0, 0.0], using="v", limit=1,
                                             query_filter=flt.model_copy(update={"must": []}))
            info = await client.get_collection("c")
            return hits.points[0].id, info.points_count, info.config.params.vectors["v"].size
        print(asyncio.run(round_trip()))
        """
    )
    assert out.strip() == "(0, 3, 2)"


def test_run_builds_the_models_its_writes_use_in_its_import_thread() -> None:
    out = _run(
        """
        from sync_service.qdrant.client import build_now, models
        assert not models.PointStruct.__pydantic_complete__
        import sync_service.qdrant.sink
        assert not models.PointStruct.__pydantic_complete__  # a command's own sink: deferred
        import sync_service.qdrant.preload  # what `run` imports in a thread
        assert models.PointStruct.__pydantic_complete__
        assert models.CreateCollection.__pydantic_complete__
        assert not models.Batch.__pydantic_complete__  # not written by the sink: left deferred
        build_now(models.Batch)
        assert models.Batch.__pydantic_complete__
        batch = models.Batch(ids=[1], vectors={"v": [[1.0]]})
        print(batch.ids)
        """
    )
    assert out.strip() == "[1]"


def test_an_earlier_plain_import_is_kept() -> None:
    out = _run(
        """
        from qdrant_client import models as plain
        assert plain.PointStruct.__pydantic_complete__
        from sync_service.qdrant.client import models
        assert models is plain
        print("kept")
        """
    )
    assert out.strip() == "kept"


def test_a_failing_import_restores_what_it_changed() -> None:
    out = _run(
        """
        import builtins
        from pydantic import BaseModel
        real = builtins.__import__

        def refuse(name, globals=None, *args, **kwargs):
            # qdrant_client/http/models/__init__.py: "from .models import *"
            if name == "models" and (globals or {}).get("__name__") == "qdrant_client.http.models":
                raise ImportError("broken install")
            return real(name, globals, *args, **kwargs)

        builtins.__import__ = refuse
        try:
            import sync_service.qdrant.client
        except ImportError as exc:
            assert "broken install" in str(exc)
        else:
            raise AssertionError("the import did not fail")
        import sys
        assert "defer_build" not in BaseModel.model_config
        assert "qdrant_client._pydantic_compat" not in sys.modules
        print("restored")
        """
    )
    assert out.strip() == "restored"

"""``/_emulator/*``: knobs, statistics, webhook deliveries, and upstream changes made "as
another client would" (no auth, not counted, like the 2024 emulator's controls).

* ``POST /_emulator/seed``: objects processed into a collection at once;
* ``POST /_emulator/objects/{id}/reprocess``: re-run the extractors (new ``updated_at``; new
  ids beside the old documents when ids are not deterministic);
* ``PATCH /_emulator/documents/{id}``: change a document's fields (new ``updated_at``);
* ``DELETE /_emulator/documents/{id}``, ``POST /_emulator/documents/delete``: delete documents
  (no event: Mixpeek has no document-level delete event).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Response
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field, ValidationError

from sync_service.emulator import library
from sync_service.emulator.responses import ApiError, json_response
from sync_service.emulator.v1.dispatcher import Dispatcher
from sync_service.emulator.v1.model import Blob, StoredObject
from sync_service.emulator.v1.store import V1State

CONTROL_PREFIX = "/_emulator"


class SeedRequest(BaseModel):
    collection: str  # id or name
    count: int = Field(default=1, ge=1, le=10_000)
    modality: Literal["video", "image", "text"] = "video"
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: Videos of this many seconds (made-up media) instead of the library's, as the 2024
    #: emulator's seed: tests know how many segments each makes.
    duration: int | None = Field(default=None, ge=1, le=36_000)


class DocumentChange(BaseModel):
    fields: dict[str, Any]


class DeleteRequest(BaseModel):
    document_ids: list[str]


def seed_blob(modality: str, n: int) -> tuple[str, str]:
    """(type, data) of the ``n``-th seeded object: the library first, then made-up media."""
    if modality == "video":
        urls = library.VIDEO_URLS
        return "video", urls[n] if n < len(
            urls
        ) else f"https://media.example.com/v/{n}.mp4?duration=30"
    if modality == "image":
        urls = library.IMAGE_URLS
        return "image", urls[n] if n < len(urls) else f"https://media.example.com/i/{n}.jpg"
    texts = library.TEXTS
    return "text", texts[n] if n < len(texts) else f"Seeded text number {n} about nothing much."


def add_controls(router: APIRouter, state: V1State, dispatcher: Dispatcher) -> None:
    p = CONTROL_PREFIX
    seeded = [0]  # per modality would shift nothing useful; one counter numbers the content

    @router.get(f"{p}/config", include_in_schema=False)
    async def get_config() -> Response:
        return json_response(state.config.model_dump())

    @router.patch(f"{p}/config", include_in_schema=False)
    async def patch_config(changes: dict[str, Any] = Body(...)) -> Response:
        try:
            config = state.update_config(changes)
        except ValidationError as exc:
            detail = jsonable_encoder(exc.errors(include_url=False, include_context=False))
            return json_response({"detail": detail}, 422)
        return json_response(config.model_dump())

    @router.get(f"{p}/stats", include_in_schema=False)
    async def stats() -> Response:
        return json_response(state.stats.snapshot())

    @router.post(f"{p}/stats/reset", include_in_schema=False)
    async def reset_stats() -> Response:
        state.stats.reset()
        return json_response({"message": "Statistics reset"})

    @router.get(f"{p}/webhooks/deliveries", include_in_schema=False)
    async def deliveries() -> Response:
        return json_response(dispatcher.snapshot())

    @router.post(f"{p}/seed", include_in_schema=False)
    async def seed(body: SeedRequest) -> Response:
        state.refresh()
        col = state.collection_of(None, body.collection)
        now = state.clock()
        object_ids, document_ids = [], []
        for _ in range(body.count):
            kind, data = seed_blob(body.modality, seeded[0])
            if body.modality == "video" and body.duration is not None:
                data = f"https://media.example.com/v/{seeded[0]}.mp4?duration={body.duration}"
            seeded[0] += 1
            obj = StoredObject(
                state.new_id("obj"),
                col.bucket_ids[0],
                col.namespace_id,
                None,
                [Blob(state.new_id("blob"), body.modality, kind, data)],
                dict(body.metadata),
                now,
                now,
            )
            state.objects[obj.object_id] = obj
            object_ids.append(obj.object_id)
            document_ids.extend(state.process(obj, col, now))
        state.documents_written(col.collection_id, document_ids, now)
        return json_response({"object_ids": object_ids, "document_ids": document_ids})

    @router.post(p + "/objects/{object_id}/reprocess", include_in_schema=False)
    async def reprocess(object_id: str) -> Response:
        state.refresh()
        obj = state.objects.get(object_id)
        if obj is None:
            raise ApiError(404, f"Object {object_id} not found")
        written: dict[str, list[str]] = {}
        for col in state.collections_of_bucket(obj.bucket_id):
            written[col.collection_id] = state.process(obj, col, state.clock())
        for collection_id, ids in written.items():
            state.documents_written(collection_id, ids, state.clock())
        return json_response({"object_id": object_id, "document_ids": written})

    @router.patch(p + "/documents/{document_id}", include_in_schema=False)
    async def change(document_id: str, body: DocumentChange) -> Response:
        state.refresh()
        doc = state.documents.get(document_id)
        if doc is None:
            raise ApiError(404, f"Document {document_id} not found")
        doc.fields.update(body.fields)
        doc.updated = state.later(doc.updated)
        state.documents_written(doc.collection_id, [document_id], doc.updated)
        return json_response({"document_id": document_id, "updated_at": state.zulu(doc.updated)})

    @router.delete(p + "/documents/{document_id}", include_in_schema=False)
    async def delete(document_id: str) -> Response:
        if not state.delete_documents([document_id]):
            raise ApiError(404, f"Document {document_id} not found")
        return json_response({"deleted": 1})

    @router.post(f"{p}/documents/delete", include_in_schema=False)
    async def delete_many(body: DeleteRequest) -> Response:
        return json_response({"deleted": state.delete_documents(body.document_ids)})

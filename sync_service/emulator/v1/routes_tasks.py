"""Tasks: get, list and kill. A task past ``task_expiry`` answers 404, as Mixpeek's do after
about 24 h (its batch still answers, which is how a client recovers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Response

from sync_service.emulator.responses import ApiError, json_response
from sync_service.emulator.v1 import views
from sync_service.emulator.v1.model import TERMINAL, Task
from sync_service.emulator.v1.store import V1State


def add_task_routes(router: APIRouter, state: V1State) -> None:
    # X-Namespace is not required here: the OpenAPI declares only Authorization for tasks.
    def task(task_id: str) -> Task:
        found = state.tasks.get(task_id)
        if found is None or state.expired(found):
            raise ApiError(404, f"Task {task_id} not found")
        return found

    @router.get("/v1/tasks/{task_id}")
    async def get_task(task_id: str) -> Response:
        return json_response(views.task(state, task(task_id)))

    @router.delete("/v1/tasks/{task_id}")
    async def kill_task(task_id: str) -> Response:
        found = task(task_id)
        if state.task_status(found)[0] not in TERMINAL:
            found.canceled_at = state.clock()
        return json_response({"message": f"Task {task_id} canceled", "success": True})

    @router.post("/v1/tasks/list")
    async def list_tasks(
        limit: int = 10, offset: int = 0, body: dict[str, Any] | None = Body(None)
    ) -> Response:
        wanted = body or {}
        items = []
        for found in state.tasks.values():
            if state.expired(found):
                continue
            view = views.task(state, found)
            if wanted.get("status") and view["status"] != wanted["status"]:
                continue
            if wanted.get("task_type") and view["task_type"] != wanted["task_type"]:
                continue
            items.append(view)
        return json_response(views.page(items[offset : offset + limit], len(items), limit, offset))

"""Organization-level routes: health, the organization, namespaces and webhooks (CRUD).

Webhooks are organization-wide and need no ``X-Namespace``. The create path has a trailing
slash in the OpenAPI and none in the docs' example: both are served.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field

from sync_service.emulator.responses import ApiError, json_response
from sync_service.emulator.v1 import views
from sync_service.emulator.v1.model import Webhook
from sync_service.emulator.v1.store import V1State

# The published enum, 31 values; ``*`` is mentioned in its text but is not one of them.
EVENT_TYPES = frozenset(
    [f"object.{x}" for x in ("created", "updated", "deleted")]
    + ["objects.created.batch"]
    + [f"collection.{x}" for x in ("created", "updated", "deleted", "documents.written")]
    + [
        f"cluster.{x}"
        for x in (
            "created",
            "updated",
            "deleted",
            "execution.started",
            "execution.completed",
            "execution.failed",
        )
    ]
    + [
        f"trigger.{x}"
        for x in (
            "created",
            "updated",
            "deleted",
            "paused",
            "resumed",
            "fired",
            "execution.completed",
            "execution.failed",
        )
    ]
    + [f"taxonomy.{x}" for x in ("created", "updated", "deleted")]
    + [
        f"alert.{x}"
        for x in (
            "created",
            "updated",
            "deleted",
            "triggered",
            "execution.completed",
            "execution.failed",
        )
    ]
)


class CreateNamespace(BaseModel):
    model_config = ConfigDict(extra="allow")
    namespace_name: str = Field(min_length=1)
    description: str | None = None
    feature_extractors: list[dict[str, Any]] = Field(default_factory=list)


class Channel(BaseModel):
    model_config = ConfigDict(extra="allow")
    channel: str
    configs: dict[str, Any] = Field(default_factory=dict)


class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    webhook_name: str = Field(min_length=1, max_length=200)
    event_types: list[str] = Field(min_length=1)
    channels: list[Channel] = Field(min_length=1)
    is_active: bool = True


def _webhook_view(state: V1State, hook: Webhook) -> dict[str, Any]:
    # Headers come back as stored, secret included (GUESS: nothing says they are masked).
    return {
        "webhook_id": hook.webhook_id,
        **hook.body,
        "created_at": state.naive(hook.created),
        "updated_at": state.naive(hook.updated),
    }


def _checked(body: WebhookBody) -> dict[str, Any]:
    unknown = sorted(set(body.event_types) - EVENT_TYPES)
    if unknown:
        raise ApiError(400, f"Unknown event types: {', '.join(unknown)}", {"unknown": unknown})
    for channel in body.channels:
        if channel.channel not in ("email", "slack", "webhook"):
            raise ApiError(400, f"Unknown channel {channel.channel!r}")
        if channel.channel == "webhook" and not channel.configs.get("url"):
            raise ApiError(400, "A webhook channel needs configs.url")
    return body.model_dump()


def add_org_routes(router: APIRouter, state: V1State) -> None:
    @router.get("/v1/health")
    async def health() -> Response:
        return json_response({"status": "healthy", "version": "v1-emulator"})

    @router.get("/v1/organizations")
    async def organization() -> Response:
        per_minute = state.config.rate_limit or 600
        limits = dict.fromkeys(("metadata", "data", "search", "upload", "compute"), per_minute)
        return json_response(
            {
                "organization_id": state.organization_id,
                "organization_name": "Emulated org",
                "account_type": "pro",
                "credit_count": 100_000,
                "rate_limits": limits,
                "current_month_usage": 0,
                "created_at": state.naive(state.started),
                "updated_at": state.naive(state.started),
            }
        )

    @router.post("/v1/namespaces")
    async def create_namespace(body: CreateNamespace) -> Response:
        ns = state.create_namespace(body.namespace_name, body.description, body.feature_extractors)
        return json_response(views.namespace(state, ns))

    @router.get("/v1/namespaces/{ident}")
    async def get_namespace(ident: str) -> Response:
        return json_response(views.namespace(state, state.namespace(ident)))

    @router.post("/v1/namespaces/list")
    async def list_namespaces(limit: int = 10, offset: int = 0) -> Response:
        items = [views.namespace(state, ns) for ns in state.namespaces.values()]
        return json_response(views.page(items[offset : offset + limit], len(items), limit, offset))

    async def create_webhook(body: WebhookBody) -> Response:
        now = state.clock()
        hook = Webhook(state.new_id("wh"), _checked(body), now, now)
        state.webhooks[hook.webhook_id] = hook
        return json_response(_webhook_view(state, hook), 201)

    for path in ("/v1/organizations/webhooks/", "/v1/organizations/webhooks"):
        router.add_api_route(path, create_webhook, methods=["POST"])

    @router.post("/v1/organizations/webhooks/list")
    async def list_webhooks(
        limit: int = 10, offset: int = 0, body: dict[str, Any] | None = Body(None)
    ) -> Response:
        wanted = body or {}
        hooks = [
            h
            for h in state.webhooks.values()
            if ("event_type" not in wanted or wanted["event_type"] in h.body["event_types"])
            and ("is_active" not in wanted or wanted["is_active"] == h.body["is_active"])
        ]
        items = [_webhook_view(state, h) for h in hooks]
        answer = views.page(items[offset : offset + limit], len(items), limit, offset)
        return json_response({**answer, "total": len(items)})

    def webhook(ident: str) -> Webhook:
        for hook in state.webhooks.values():
            if ident in (hook.webhook_id, hook.body["webhook_name"]):
                return hook
        raise ApiError(404, f"Webhook {ident} not found", {"id": ident})

    @router.get("/v1/organizations/webhooks/{ident}")
    async def get_webhook(ident: str) -> Response:
        return json_response(_webhook_view(state, webhook(ident)))

    @router.put("/v1/organizations/webhooks/{ident}")
    async def put_webhook(ident: str, body: WebhookBody) -> Response:
        hook = webhook(ident)
        hook.body, hook.updated = _checked(body), state.later(hook.updated)
        return json_response(_webhook_view(state, hook))

    @router.delete("/v1/organizations/webhooks/{ident}")
    async def delete_webhook(ident: str) -> Response:
        for hook in list(state.webhooks.values()):  # idempotent: an unknown id is a 204 too
            if ident in (hook.webhook_id, hook.body["webhook_name"]):
                del state.webhooks[hook.webhook_id]
        return Response(status_code=204)

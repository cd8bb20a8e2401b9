"""The v1 API's webhook subscriptions and namespace identity, for the adapter.

Webhooks are organization-wide (README "Webhooks"): ``POST /v1/organizations/webhooks/``,
``…/list``, ``PUT``/``DELETE …/{id}``. A subscription's shared secret travels as one of its
channel's static headers, and the API returns headers as stored, so nothing read here keeps a
header's value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync_service.upstream.errors import MixpeekNotFound
from sync_service.upstream.port import WebhookSubscription
from sync_service.upstream.v1.client import V1Client

__all__ = ["Webhooks"]


def subscription(hook: Mapping[str, Any]) -> WebhookSubscription:
    """The port's view of a webhook as served (header names only)."""
    url: str | None = None
    names: list[str] = []
    channels = hook.get("channels")
    for channel in channels if isinstance(channels, list) else []:
        if not isinstance(channel, dict) or channel.get("channel") != "webhook":
            continue
        configs = channel.get("configs") if isinstance(channel.get("configs"), dict) else {}
        assert isinstance(configs, dict)
        if url is None and isinstance(configs.get("url"), str):
            url = configs["url"]
        headers = configs.get("headers")
        names += [str(k) for k in headers] if isinstance(headers, dict) else []
    events = hook.get("event_types")
    return WebhookSubscription(
        webhook_id=str(hook.get("webhook_id") or hook.get("id") or ""),
        name=str(hook.get("webhook_name") or ""),
        url=url,
        event_types=tuple(str(e) for e in events) if isinstance(events, list) else (),
        active=bool(hook.get("is_active", True)),
        header_names=tuple(dict.fromkeys(names)),
    )


class Webhooks:
    """Webhook subscriptions and the namespace's identifiers over :class:`V1Client`."""

    def __init__(self, client: V1Client) -> None:
        self.client = client
        self._namespace: frozenset[str] | None = None

    async def namespace_ids(self) -> frozenset[str]:
        """The configured namespace's id and name, read once (``GET /v1/namespaces/{x}``);
        only what is configured while the API cannot say more (404: it is asked again)."""
        configured = self.client.namespace
        if not configured:
            return frozenset()
        if self._namespace is None:
            try:
                ns = await self.client.get_namespace(configured)
            except MixpeekNotFound:
                return frozenset({configured})
            found = {configured}
            found |= {str(ns[k]) for k in ("namespace_id", "namespace_name") if ns.get(k)}
            self._namespace = frozenset(found)
        return self._namespace

    async def save(
        self, name: str, url: str, event_types: tuple[str, ...], headers: Mapping[str, str]
    ) -> tuple[WebhookSubscription, bool]:
        body = {
            "webhook_name": name,
            "event_types": list(event_types),
            "channels": [{"channel": "webhook", "configs": {"url": url, "headers": dict(headers)}}],
            "is_active": True,
        }
        existing = [h for h in await self.client.list_webhooks() if h.get("webhook_name") == name]
        if existing and existing[0].get("webhook_id"):
            hook = await self.client.replace_webhook(str(existing[0]["webhook_id"]), body)
            return subscription(hook), False
        return subscription(await self.client.create_webhook(body)), True

    async def list(self) -> list[WebhookSubscription]:
        return [subscription(h) for h in await self.client.list_webhooks()]

    async def delete(self, webhook_id: str) -> None:
        await self.client.delete_webhook(webhook_id)

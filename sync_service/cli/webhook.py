"""``sync-service webhook …``: the Mixpeek webhook subscription (register, list, remove) and
the collection deletions webhooks hold for a person (confirm, dismiss). README "Webhooks".

The shared secret (``SYNC_WEBHOOK_SECRET``) goes to Mixpeek as a static header of the
subscription and is never printed: ``list`` shows header names only.

Registered on the main ``sync-service`` app by ``cli/main.py``.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer

from sync_service.cli.common import EXIT_CONFIG, check_ids, err, fail, load_settings, out, run_async

if TYPE_CHECKING:
    from sync_service.settings import Settings
    from sync_service.upstream.port import Upstream, WebhookSubscription

#: What the service acts on (README "Webhooks"); every other type is acknowledged and ignored.
DEFAULT_EVENTS = ("collection.documents.written", "object.deleted", "collection.deleted")

webhook_app = typer.Typer(
    help="Mixpeek webhooks: the subscription that pushes changes to `run`'s receiver, and the "
    "collection deletions they hold.",
    no_args_is_help=True,
)


@webhook_app.command("register")
def register(
    url: str = typer.Option(
        ..., "--url", help="Where Mixpeek posts events: this service's /webhooks/mixpeek."
    ),
    events: list[str] = typer.Option(
        list(DEFAULT_EVENTS),
        "--events",
        help="Event types (repeatable, or comma-separated). Default: the three the service uses.",
    ),
    name: str = typer.Option("sync-service", "--name", help="The webhook's name at Mixpeek."),
) -> None:
    """Subscribe this service to Mixpeek's webhooks (a webhook of the same name is replaced:
    running it again rotates the secret). The secret is SYNC_WEBHOOK_SECRET."""
    from sync_service.control.webhook_envelope import KNOWN_TYPES
    from sync_service.settings import brief

    settings = load_settings(calls_mixpeek=True)
    if settings.webhook_secret is None:
        fail("SYNC_WEBHOOK_SECRET: set it first (the receiver checks it)", EXIT_CONFIG)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        fail(f"--url {brief(url)}: an http:// or https:// URL", EXIT_CONFIG)
    types = tuple(dict.fromkeys(t.strip() for e in events for t in e.split(",") if t.strip()))
    unknown = sorted(set(types) - KNOWN_TYPES)
    if not types or unknown:
        named = brief(", ".join(unknown)) if unknown else "(none given)"
        fail(f"--events: unknown event type(s) {named}", EXIT_CONFIG)
    if not name.strip() or len(name) > 200:
        fail("--name: 1 to 200 characters", EXIT_CONFIG)
    headers = {settings.webhook_header: settings.webhook_secret.get_secret_value()}

    async def main() -> tuple[WebhookSubscription, bool]:
        async with _upstream(settings) as upstream:
            return await upstream.save_webhook(name, url, types, headers)

    hook, new = run_async(main())
    out.print(hook.webhook_id, highlight=False)
    err.print(
        f"{'registered' if new else 'replaced'} webhook {hook.name} ({hook.webhook_id}): "
        f"{', '.join(hook.event_types)} to {hook.url}, with the secret in the "
        f"{settings.webhook_header} header",
        highlight=False,
    )


@webhook_app.command("list")
def list_webhooks(
    as_json: bool = typer.Option(False, "--json", help="A JSON array on stdout."),
) -> None:
    """The organization's webhooks (header names only, never their values)."""
    settings = load_settings(calls_mixpeek=True)

    async def main() -> list[WebhookSubscription]:
        async with _upstream(settings) as upstream:
            return await upstream.list_webhooks()

    hooks = run_async(main())
    rows = [_row(h) for h in hooks]
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    if not rows:
        err.print("no webhook is registered: `sync-service webhook register --url URL`")
        return
    from rich.table import Table

    table = Table("id", "name", "url", "events", "active", "headers")
    for r in rows:
        table.add_row(
            r["webhook_id"],
            r["name"],
            r["url"] or "",
            ", ".join(r["event_types"]),
            "yes" if r["active"] else "no",
            ", ".join(r["header_names"]),
        )
    out.print(table)


@webhook_app.command("remove")
def remove(
    webhook_ids: list[str] = typer.Argument(..., help="Webhook ids (or names)."),
) -> None:
    """Remove webhooks at Mixpeek (an unknown one is no error)."""
    settings = load_settings(calls_mixpeek=True)
    ids = check_ids("webhook id", webhook_ids)

    async def main() -> None:
        async with _upstream(settings) as upstream:
            for webhook_id in ids:
                await upstream.delete_webhook(webhook_id)

    run_async(main())
    err.print(f"removed {len(ids)} webhook(s)")


@webhook_app.command("confirm")
def confirm(
    collection_id: str = typer.Argument(..., help="A collection a webhook says was deleted."),
) -> None:
    """Confirm a collection's deletion: its points leave Qdrant (ledger first) and it leaves
    the watch set."""
    settings = load_settings()
    (cid,) = check_ids("collection id", [collection_id])
    from sync_service.engine.points import collection_name
    from sync_service.keep.forget import apply_removal, plan_removal
    from sync_service.runtime import open_service

    async def main() -> int | None:
        async with open_service(settings) as service:
            store = service.store
            if cid not in await store.deleted_upstream():
                return None
            target = collection_name(settings.qdrant_collection_for(cid))
            assets = sorted(await store.known_assets(cid))
            removal = await plan_removal(
                store, service.sink, assets, every_collection=False, also=[target]
            )
            removed = await apply_removal(store, service.sink, removal)
            await store.watch_remove([cid])
            await store.settle_deletion(cid, confirmed=True)
            return removed

    removed = run_async(main())
    if removed is None:
        fail(f"no deletion of {cid} is held (see `sync-service status`)")
    err.print(f"{cid}: deletion confirmed; {removed} point(s) removed, no longer watched")


@webhook_app.command("dismiss")
def dismiss(
    collection_id: str = typer.Argument(..., help="A collection a webhook says was deleted."),
) -> None:
    """Dismiss a held deletion: the collection's points stay (and watch goes on)."""
    settings = load_settings()
    (cid,) = check_ids("collection id", [collection_id])
    from sync_service.state.store import open_store

    async def main() -> int:
        async with open_store(settings) as store:
            return await store.settle_deletion(cid, confirmed=False)

    if not run_async(main()):
        fail(f"no deletion of {cid} is held (see `sync-service status`)")
    err.print(f"{cid}: held deletion dismissed; its points stay")


def _upstream(settings: Settings) -> Upstream:
    from sync_service.runtime import open_upstream

    return open_upstream(settings)


def _row(hook: WebhookSubscription) -> dict[str, Any]:
    return {
        "webhook_id": hook.webhook_id,
        "name": hook.name,
        "url": hook.url,
        "event_types": list(hook.event_types),
        "active": hook.active,
        "header_names": list(hook.header_names),
    }

"""Named failpoints for crash tests: no-ops unless ``SYNC_FAILPOINTS`` names them.

``SYNC_FAILPOINTS="after_upsert=kill"`` makes the process SIGKILL itself when the pipeline
reaches that step; ``name=kill@3`` does so the third time it gets there; ``name=sleep:2``
pauses there, ``name=raise`` raises ``FailpointError``.
Several can be given, separated by commas. The variable is read once, at import.
"""

from __future__ import annotations

import asyncio
import os
import signal

#: The daemon's steps, in order (every one is a crash point of the reliability matrix).
PIPELINE_STEPS = ("after_claim", "after_poll", "after_fetch", "after_upsert", "after_record")
#: Every failpoint, the ``backfill`` and ``reindex`` commands' own included.
STEPS = (
    *PIPELINE_STEPS,
    "after_listing_page",
    "after_forget_ledger",
    "after_reindex_asset",
)


class FailpointError(RuntimeError):
    """Raised by a failpoint set to ``raise``."""


def _parse(spec: str) -> dict[str, str]:
    actions = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        actions[name.strip()] = action.strip() or "kill"
    return actions


_ACTIONS = _parse(os.environ.get("SYNC_FAILPOINTS", ""))
_REACHED: dict[str, int] = {}


async def failpoint(name: str) -> None:
    """Act on the failpoint ``name`` if it is configured."""
    action = _ACTIONS.get(name)
    if action is None:
        return
    _REACHED[name] = _REACHED.get(name, 0) + 1
    if action == "kill" or (
        action.startswith("kill@") and _REACHED[name] == int(action.removeprefix("kill@"))
    ):
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("sleep:"):
        await asyncio.sleep(float(action.removeprefix("sleep:")))
    elif action == "raise":
        raise FailpointError(f"failpoint {name}")

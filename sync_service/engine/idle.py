"""``run --drain`` with nothing to do, told without loading SQLAlchemy.

A drain that finds no work stops at its first tick, and on a SQLite store most of its start-up
would be importing SQLAlchemy and opening the store (a quarter of a second of 0.6). When the
store is a SQLite file at the newest schema, already bound to the Qdrant this process points at
(``keep/binding.py``), and holds no work (``Store.has_work``'s reads, through ``state/peek.py``),
this tells so and logs what the daemon logs then: started, drained, stopped. Anything else (a
URL ``peek`` does not read, a store to create, migrate or bind, another target, any SQLite
error) is left to the daemon, with its outcome and its errors.
``tests/integration/test_idle_drain.py`` checks the two agree.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from sync_service.state.peek import StorePeek, peek_sqlite

#: The daemon's logger: the lines are those ``Daemon.run`` writes for an idle drain.
log = logging.getLogger("sync_service.engine.scheduler")


def worker_name() -> str:
    """A lease owner name unique to this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def drained_at_once(database_url: str, target: str) -> bool | None:
    """Whether the store at ``database_url`` (bound to ``target``, as ``describe_target``
    names it) holds no work. True: the daemon's lines are logged and it need not start.
    False: it holds work (the daemon calls Mixpeek at once). None: this cannot tell."""

    async def idle(store: StorePeek) -> bool | None:
        bound = await store.info("qdrant_target")
        if bound not in (target, None):
            return None  # the daemon refuses it, with its error
        if await store.has_work():
            return False
        return True if bound == target else None  # unbound: the daemon binds it

    drained = await peek_sqlite(database_url, idle)
    if not drained:
        return drained
    owner = worker_name()
    log.info("daemon started", extra={"event": "daemon_started", "owner": owner, "drain": True})
    log.info("nothing pending: drained", extra={"event": "drained"})
    log.info("daemon stopped", extra={"event": "daemon_stopped"})
    return True

"""Soak: a watched collection under churn, 5xx answers and killed daemons, then Qdrant against
the test oracle.

    .venv/bin/python -m bench.soak --minutes 5                  # 2024 API, one daemon
    .venv/bin/python -m bench.soak --api v1 --minutes 5
    .venv/bin/python -m bench.soak --replicas 2 --database-url postgresql://postgres@127.0.0.1/soak
    .venv/bin/python -m bench.soak --qdrant-outages               # Qdrant down at times, too

The emulator (in this process) answers one request in ten with a 5xx. A churn thread adds
assets, changes them (new vectors, new captions, features replaced by new ones) and deletes
them, as other Mixpeek clients would. ``sync-service run`` daemons mirror the collection in watch
mode (an incremental pass every 2 s, a full pass with its deletion sweep every 30 s); every 10-40
s one of them gets SIGKILL (60 %) or SIGTERM and a new one starts. At the end the churn stops,
the daemons get a quiet minute and stop, and Qdrant is compared with what the emulator serves
then (``tests/support.py``'s oracle: every point's vectors and payload). Exit 0 when it holds
exactly that, 1 otherwise. One daemon uses SQLite and embedded Qdrant; several share an empty
PostgreSQL database (``--database-url``) and the Qdrant REST stand-in (``tests/qdrant_server.py``).
``--qdrant-outages`` runs on the stand-in and takes it down (every request answered 503) for
5-15 s every 20-50 s.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from bench.common import Service
from tests.conftest import API_KEY
from tests.qdrant_server import QdrantStandIn
from tests.support import compare_points
from tests.upstreams import COLLECTION, Mixpeek, open_mixpeek

#: Seconds the daemons get after the churn stops: tasks finish, a full pass sweeps.
QUIET = 60.0
#: Change modes of ``Mixpeek.change``.
CHANGES = ("vectors", "payload", "features")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", choices=("2024", "v1"), default="2024")
    parser.add_argument("--minutes", type=float, default=5.0, help="churn and kills (default 5)")
    parser.add_argument("--replicas", type=int, default=1, help="daemons at once (default 1)")
    parser.add_argument("--database-url", help="an empty PostgreSQL database (replicas > 1)")
    parser.add_argument(
        "--qdrant-outages", action="store_true", help="Qdrant (the stand-in) down at times"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="keep the logs and data in this folder")
    args = parser.parse_args()
    if args.replicas > 1 and not args.database_url:
        parser.error("--replicas > 1 needs --database-url (replicas share PostgreSQL)")
    rng = random.Random(args.seed)
    root = args.keep or Path(tempfile.mkdtemp(prefix="soak-"))
    server = args.replicas > 1 or args.qdrant_outages
    with (
        open_mixpeek(args.api, processing_time=1.5, seed=args.seed) as world,
        _qdrant(root, server) as (qdrant_env, stand_in),
    ):
        env = {
            **world.env,
            **qdrant_env,
            "MIXPEEK_API_KEY": API_KEY,
            "QDRANT_COLLECTION": COLLECTION,
            "SYNC_WATCH_COLLECTIONS": world.collection,
            "SYNC_WATCH_INTERVAL": "2",
            "SYNC_WATCH_FULL_INTERVAL": "30",
            "SYNC_WATCH_OVERLAP": "10",
            "SYNC_DELETE_GUARD": "0.5",  # a small collection: one deletion can be 20 %
            "SYNC_SHUTDOWN_GRACE": "3",
            "SYNC_LOG_LEVEL": "INFO",
            **({"DATABASE_URL": args.database_url} if args.database_url else {}),
        }
        service = Service(root, world.url, **env)
        world.patch(error_rate=0.1)
        churn = Churn(world, rng)
        churn.start()
        outages = Outages(stand_in, random.Random(args.seed + 1)) if args.qdrant_outages else None
        if outages is not None:
            outages.start()
        daemons = [service.start("run") for _ in range(args.replicas)]
        started = time.monotonic()
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(rng.uniform(10, 40))
            k = rng.randrange(len(daemons))
            sig = signal.SIGKILL if rng.random() < 0.6 else signal.SIGTERM
            daemons[k].send_signal(sig)
            code = daemons[k].wait(timeout=30)
            print(
                f"{time.monotonic() - started:6.1f} s  {sig.name} to daemon {k} (exit {code});"
                f" changes so far: {dict(churn.counts)}",
                flush=True,
            )
            time.sleep(rng.uniform(0.2, 2))
            daemons[k] = service.start("run")
        churn.stop()
        if outages is not None:
            outages.stop()
        print(f"churn stopped: {dict(churn.counts)}; {QUIET:.0f} s quiet", flush=True)
        time.sleep(QUIET)
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        codes = [daemon.wait(timeout=30) for daemon in daemons]
        world.patch(error_rate=0.0)  # the oracle reads upstream without retries
        expected = world.expected(churn.alive)
        found = compare_points(expected, _points(qdrant_env))
    in_step = all(n == 0 for n in found.values()) and all(c == 0 for c in codes)
    print(
        f"{'IN STEP' if in_step else 'DRIFT'}: {len(churn.alive)} assets upstream, "
        f"{len(expected)} points expected; {found}; last exit codes {codes}; logs in {root}"
    )
    return 0 if in_step else 1


class _Background:
    """A loop on a thread of its own (``_run``), until ``stop``."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.rng = rng
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError


class Churn(_Background):
    """Other Mixpeek clients at work: new assets, changed ones, deleted ones, every 0.2-0.8 s.
    Each change is retried until the emulator (answering 5xx at times) takes it."""

    def __init__(self, world: Mixpeek, rng: random.Random) -> None:
        super().__init__("churn", rng)
        self.world = world
        self.alive: list[str] = []
        self.counts: Counter[str] = Counter()

    def _run(self) -> None:
        while not self._stop.is_set():
            roll = self.rng.random()
            if roll < 0.4 or len(self.alive) < 5:
                self.alive += _retried(self.world.seed, self.rng.randint(1, 3))
                self.counts["new"] += 1
            elif roll < 0.85:
                mode = self.rng.choice(CHANGES)
                _retried(self.world.change, self.rng.choice(self.alive), mode)
                self.counts[mode] += 1
            else:
                gone = self.alive.pop(self.rng.randrange(len(self.alive)))
                _retried(self.world.delete, [gone])
                self.counts["deleted"] += 1
            self._stop.wait(self.rng.uniform(0.2, 0.8))


class Outages(_Background):
    """Qdrant down (the stand-in answers every request 503) for 5-15 s every 20-50 s."""

    def __init__(self, stand_in: QdrantStandIn | None, rng: random.Random) -> None:
        assert stand_in is not None, "outages need the stand-in"
        super().__init__("outages", rng)
        self.stand_in = stand_in
        self.count = 0

    def stop(self) -> None:
        super().stop()
        self.stand_in.clear_faults()

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(20, 50)):
            down = self.rng.uniform(5, 15)
            self.stand_in.set_faults("down")
            self.count += 1
            print(f"Qdrant down for {down:.0f} s (outage {self.count})", flush=True)
            self._stop.wait(down)
            self.stand_in.clear_faults()


def _retried(call: Callable[..., Any], *args: Any) -> Any:
    for _ in range(50):
        try:
            return call(*args)
        except Exception:  # a 5xx the emulator chose: as a client would, try again
            time.sleep(0.1)
    return call(*args)


@contextlib.contextmanager
def _qdrant(root: Path, server: bool) -> Iterator[tuple[dict[str, str], QdrantStandIn | None]]:
    """Embedded Qdrant, or the REST stand-in (which several daemons can share)."""
    if not server:
        yield {"QDRANT_PATH": str(root / "qdrant")}, None
        return
    with QdrantStandIn(root / "qdrant") as stand_in:
        yield {"QDRANT_URL": stand_in.url}, stand_in


def _points(qdrant_env: dict[str, str]) -> list[Any]:
    url = qdrant_env.get("QDRANT_URL")
    client = QdrantClient(url=url) if url else QdrantClient(path=qdrant_env["QDRANT_PATH"])
    try:
        records: list[Any] = []
        offset = None
        while True:
            page, offset = client.scroll(
                COLLECTION, limit=256, offset=offset, with_payload=True, with_vectors=True
            )
            records += page
            if offset is None:
                return records
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())

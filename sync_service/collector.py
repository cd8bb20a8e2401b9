"""Python's cyclic garbage collector, held off while ``run`` starts.

Start-up makes about 200,000 objects that live as long as the process: the CLI, the settings,
the HTTP clients, SQLAlchemy and the daemon's modules, then Qdrant's client, imported in a
thread at the first write (``runtime.import_in_thread``, held off again meanwhile). Their
allocation kept triggering the collector, which walked them again and again: 461-470
collections in a run of bench scenario 10, 0.19-0.27 s of pauses in all (two full
collections of 14-35 ms), each one stopping the event loop, and every answer waiting on it.
Held off until start-up is over, the collector made 102-104 collections in such a run,
0.033 s of pauses (the longest 5-7 ms).

When the last hold ends, everything made so far is frozen (``gc.freeze``: never walked
again) without a collection first: that would walk all of it once more (50-75 ms). What it
would have freed is kept instead, once: 100-1,100 objects of cyclic garbage, counted in those
runs. Then the collector runs as before, over what the daemon makes from then on.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["hold", "release"]

_lock = threading.Lock()
_holds = 0
_was_enabled = False


def hold() -> None:
    """Hold the collector off until a matching :func:`release` (holds nest, across threads)."""
    global _holds, _was_enabled
    with _lock:
        if _holds == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holds += 1


def release() -> None:
    """End one hold; the last one freezes what exists and lets the collector run again (if
    it ran before the first hold)."""
    global _holds
    with _lock:
        if _holds == 0:
            raise RuntimeError("collector.release() without a hold")
        _holds -= 1
        if _holds == 0:
            gc.freeze()
            if _was_enabled:
                gc.enable()

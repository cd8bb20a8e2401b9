"""Qdrant's client is imported in a thread beside the loop, with a short switch interval and
the garbage collector held off."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from sync_service.runtime import import_in_thread


def test_the_switch_interval_is_short_during_the_import_and_restored_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "slow_to_import_x1.py").write_text(
        "import gc, sys\nSEEN = sys.getswitchinterval(), gc.isenabled()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    before = sys.getswitchinterval()
    assert before > 0.001  # Python's default, 5 ms
    assert gc.isenabled()
    try:
        import_in_thread("slow_to_import_x1").result(timeout=10)
        interval, collecting = sys.modules.pop("slow_to_import_x1").SEEN
        assert abs(interval - 0.001) < 1e-9 and not collecting
        assert sys.getswitchinterval() == before and gc.isenabled()
    finally:
        gc.unfreeze()


def test_a_failed_import_reaches_its_awaiter_and_restores_the_interval() -> None:
    before = sys.getswitchinterval()
    loading = import_in_thread("no_such_module_x1")
    with pytest.raises(ModuleNotFoundError):
        loading.result(timeout=10)
    assert sys.getswitchinterval() == before and gc.isenabled()
    gc.unfreeze()


async def test_a_cancelled_wait_leaves_the_import_to_end_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait given up (the control API's, at a quick exit) does not cancel the import's
    future under the thread that will complete it (which raised InvalidStateError)."""
    import asyncio
    import threading

    (tmp_path / "slow_to_import_x2.py").write_text("import time\ntime.sleep(0.2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    errors: list[type[BaseException]] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_type))
    try:
        loading = import_in_thread("slow_to_import_x2")
        waiting = asyncio.ensure_future(asyncio.wrap_future(loading))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.4)  # the import ends meanwhile, in its thread
        assert loading.result(timeout=10) is None  # and says so
        assert errors == [] and "slow_to_import_x2" in sys.modules
    finally:
        sys.modules.pop("slow_to_import_x2", None)
        gc.unfreeze()

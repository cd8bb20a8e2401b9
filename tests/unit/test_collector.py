"""The garbage collector held off during `run`'s start-up (collector.py)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from sync_service import collector


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()  # what a test froze goes back to the oldest generation
    if enabled:
        gc.enable()


def test_holds_nest_and_the_last_release_freezes_and_restarts_the_collector() -> None:
    assert gc.isenabled()
    collector.hold()
    collector.hold()
    assert not gc.isenabled()
    made = [[] for _ in range(1000)]  # objects the start-up made, to live on
    frozen = gc.get_freeze_count()
    collector.release()
    assert not gc.isenabled() and gc.get_freeze_count() == frozen  # one hold left
    collector.release()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(made)  # frozen, not collected first


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    collector.hold()
    collector.release()
    assert not gc.isenabled()


def test_holds_from_several_threads() -> None:
    collector.hold()
    started, done = threading.Barrier(9), threading.Barrier(9)

    def hold_then_release() -> None:
        collector.hold()
        started.wait(timeout=10)
        done.wait(timeout=10)
        collector.release()

    threads = [threading.Thread(target=hold_then_release) for _ in range(8)]
    for thread in threads:
        thread.start()
    started.wait(timeout=10)
    collector.release()  # the first hold ends while eight threads still hold
    assert not gc.isenabled()
    done.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=10)
    assert gc.isenabled()


def test_a_release_without_a_hold_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="without a hold"):
        collector.release()

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from hubtransfer._heap import quiet_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _unfrozen() -> None:
    gc.unfreeze()  # tests start from a process that froze nothing
    yield
    gc.unfreeze()


def test_collections_inside_skip_older_objects_which_are_given_back_after() -> None:
    old = _Node()
    alive = weakref.ref(old)
    with quiet_heap():
        assert gc.get_freeze_count() > 0
        del old
        gc.collect()
        assert alive() is not None  # skipped: it existed on entry
        new = _Node()
        made_inside = weakref.ref(new)
        del new
        gc.collect()
        assert made_inside() is None  # what the study makes is collected as usual
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None  # nothing kept alive longer than the study


def test_nested_and_threaded_uses_unfreeze_once_when_the_last_leaves() -> None:
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with quiet_heap():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with quiet_heap():
        thread.start()
        assert entered.wait(10)
        with quiet_heap():
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() > 0  # the other thread is still inside
    release.set()
    thread.join(10)
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_objects_itself_is_left_as_it_is() -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    with quiet_heap():
        pass
    assert gc.get_freeze_count() == frozen

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from hubtransfer._heap import quiet_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
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


def test_what_is_already_garbage_on_entry_is_freed_not_held_through_the_study() -> None:
    dropped = _Node()  # e.g. a model deleted just before, or the last study's backbone
    dead = weakref.ref(dropped)
    del dropped
    with quiet_heap():
        assert dead() is None


def test_objects_frozen_during_the_study_by_someone_else_stay_frozen() -> None:
    with quiet_heap():
        made = [_Node() for _ in range(1000)]  # what a study makes, then someone freezes
        gc.freeze()  # e.g. a user callback preparing a fork
    assert gc.get_freeze_count() > 0 and len(made) == 1000

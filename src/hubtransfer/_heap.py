"""Garbage collection that does not rescan TensorFlow's own objects.

Importing TensorFlow and tf_keras leaves over 300,000 objects that the cyclic garbage
collector tracks and that live as long as the process. A full collection scans all of
them: 157 ms on this project's 2-core machine (``python benchmarks/fixed_costs.py``),
paid by every explicit ``gc.collect()`` between backbones and by every automatic
collection of the oldest generation while a backbone loads. :func:`quiet_heap` moves the
objects that exist when a study starts out of the collector's sight (``gc.freeze``) and
gives them back when it ends (``gc.unfreeze``): collections during the study see only
what the study made. The one cost: a reference cycle that existed before the study and
became garbage during it is freed after the study instead of during it. A process that
froze objects itself (``gc.get_freeze_count()`` above 0) is left as it is.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_heap"]

_lock = threading.Lock()
_depth = 0
_froze = False  # whether the outermost quiet_heap froze (not the process itself)


@contextmanager
def quiet_heap() -> Iterator[None]:
    """Within: collections skip the objects that existed on entry. Nests, and is safe
    from several threads: the objects are given back when the last one leaves."""
    global _depth, _froze
    with _lock:
        if _depth == 0:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _froze:
                gc.unfreeze()
                _froze = False

"""Garbage collection that does not rescan TensorFlow's own objects.

Importing TensorFlow and tf_keras leaves over 300,000 objects that the cyclic garbage
collector tracks and that live as long as the process. A full collection scans all of
them: 157 ms on this project's 2-core machine (``python benchmarks/fixed_costs.py``),
paid by every explicit ``gc.collect()`` between backbones and by every automatic
collection of the oldest generation while a backbone loads. :func:`quiet_heap` collects
once, then moves every object that is left out of the collector's sight
(``gc.freeze``) and gives them back when the study ends (``gc.unfreeze``): collections
during the study see only what the study made. The collection on entry frees what was
already garbage (a model deleted just before, the last backbone of a study before), so
it is not held while the study runs. The one cost: a reference cycle among the objects
that existed on entry that becomes garbage during the study is freed after it.

A process that froze objects itself (``gc.get_freeze_count()`` above 0 on entry) is
left as it is, and so is one that freezes objects during the study (then nothing is
given back: ``gc.unfreeze`` cannot tell its objects from ours).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_heap"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_depth = 0
_froze = 0  # how many objects the outermost quiet_heap froze (0: it did not freeze)


@contextmanager
def quiet_heap() -> Iterator[None]:
    """Within: collections skip the objects that existed on entry. Nests, and is safe
    from several threads: the objects are given back when the last one leaves."""
    global _depth, _froze
    with _lock:
        if _depth == 0 and gc.get_freeze_count() == 0:
            gc.collect()
            gc.freeze()
            _froze = gc.get_freeze_count()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _froze:
                # Frozen objects freed meanwhile lower the count; only a freeze raises it.
                if gc.get_freeze_count() <= _froze:
                    gc.unfreeze()
                else:
                    logger.debug("Objects were frozen during the study: the heap stays frozen")
                _froze = 0

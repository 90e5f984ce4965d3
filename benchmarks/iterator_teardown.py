"""Dropping a tf.data iterator: does it block, with autotuning on and off?

Every epoch, validation pass and feature pass ends by dropping its iterator. With
tf.data's model-based autotuning on (the default), that can block until the autotuner's
background thread next wakes up; the thread sleeps for doubling periods (10 ms, 20 ms,
40 ms, ...), so a pass can end at the next of 1.27 s, 2.55 s, 5.11 s, 10.23 s...
hubtransfer's pipelines (``prepare()``, the image cache, cached features) turn it off
(``hubtransfer._tf.no_autotune_stalls``).

For each setting, ``prepare()`` over a folder of generated JPEGs (image cache, a
parallel map and a prefetch) is iterated to its end and kept for a set lifetime, then
the iterator is dropped and the drop timed; and one pass over it is timed with no wait,
to show what turning autotuning off costs.

    python benchmarks/iterator_teardown.py [--rounds 3] [--images 600] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, write_jpeg_folder

LIFETIMES = (0.5, 1.0, 2.0, 3.0, 4.0)  # seconds an iterator lives before it is dropped


def pipelines(workdir: Path, images: int) -> dict[str, Any]:
    """``prepare()`` over a folder of generated JPEGs: as hubtransfer builds it
    (autotuning off), and with autotuning switched back on."""
    import tensorflow as tf

    import hubtransfer as ht

    data = ht.load_image_folder(write_jpeg_folder(workdir / "images", images), image_store=False)
    spec = ht.get_backbone("mobilenet_v2")
    ours = ht.prepare(data.train, spec, batch_size=32)
    on = tf.data.Options()
    on.autotune.enabled = True
    return {"autotuning on (tf.data default)": ours.with_options(on), "autotuning off": ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ht-teardown-"))
    print(f"machine: {machine()}")
    for name, dataset in pipelines(workdir, args.images).items():
        drops: list[float] = []
        for _ in range(args.rounds):
            for lifetime in LIFETIMES:
                start = time.perf_counter()
                iterator = iter(dataset)
                for _batch in iterator:
                    pass
                time.sleep(max(0.0, lifetime - (time.perf_counter() - start)))
                dropped = time.perf_counter()
                del iterator
                drops.append(time.perf_counter() - dropped)
        start = time.perf_counter()
        batches = sum(1 for _ in dataset)
        one_pass = time.perf_counter() - start
        print(
            f"{name}: {len(drops)} iterators dropped {LIFETIMES} s after they started; the "
            f"drop took max {max(drops):.2f} s, mean {statistics.mean(drops):.2f} s, "
            f"{sum(d > 0.05 for d in drops)} over 0.05 s; one pass of {batches} batches "
            f"(iterator dropped) {one_pass:.2f} s"
        )


if __name__ == "__main__":
    main()

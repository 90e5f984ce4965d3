"""Two fixed costs of a study that do not grow with the data, with and without the fix.

1. A full garbage collection once TensorFlow is imported: it rescans every object the
   import made. Timed as a study runs it (inside ``hubtransfer._heap.quiet_heap``,
   which leaves those objects out) and as it used to (outside).
2. The first ``prepare()`` in a new process, traced by tf.data: with hubtransfer's
   pipeline functions traced as written (``hubtransfer._tf.as_written``), and with
   AutoGraph converting them as before (``do_not_convert`` replaced by the identity in
   that process). Each in its own new Python, alternating, timed after the imports.
3. A size stand-in's weights, built in a new process from a kept outline (the weights
   of Keras's MobileNetV2, 224 px): ``hubtransfer.sizing._ZeroWeight`` objects, against
   zero-filled ``tf.Variable``s as before. Each in its own new Python, alternating.

    python benchmarks/fixed_costs.py [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time

from _common import machine

_FIRST_PREPARE = """
import json, sys, time
import numpy as np
import tensorflow as tf
if sys.argv[1] == "autograph":
    tf.autograph.experimental.do_not_convert = lambda fn: fn
import hubtransfer as ht
images = np.zeros((4, 48, 64, 3), np.uint8)
dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(4) % 2))
start = time.perf_counter()
batches = ht.prepare(dataset, "mobilenet_v2", batch_size=2)
traced = time.perf_counter() - start
next(iter(batches))
print(json.dumps({"traced": traced, "first_batch": time.perf_counter() - start}))
"""


_STAND_IN_WEIGHTS = """
import json, sys, time
import tensorflow as tf
from hubtransfer.sizing import _ZeroWeight
weights = json.loads(sys.stdin.read())
start = time.perf_counter()
if sys.argv[1] == "variables":
    built = [tf.Variable(tf.zeros(s, d), name=n[:-2], trainable=False) for n, s, d in weights]
else:
    built = [_ZeroWeight(n, tuple(s), d) for n, s, d in weights]
print(json.dumps({"seconds": time.perf_counter() - start, "weights": len(built)}))
"""


def in_new_python(code: str, *args: str, stdin: str | None = None) -> dict[str, float]:
    """The JSON line ``code`` prints last, run in a new Python with ``args``."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def full_collections(runs: int) -> tuple[list[float], list[float]]:
    from hubtransfer._heap import quiet_heap

    outside, inside = [], []
    for _ in range(runs):
        start = time.perf_counter()
        gc.collect()
        outside.append(time.perf_counter() - start)
        with quiet_heap():
            start = time.perf_counter()
            gc.collect()
            inside.append(time.perf_counter() - start)
    return outside, inside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import hubtransfer  # noqa: F401  (TensorFlow and tf_keras imported, as in a study)

    print(f"machine: {machine()}")
    print(f"objects the collector tracks after the imports: {len(gc.get_objects())}")
    outside, inside = full_collections(args.runs)
    med_out, med_in = statistics.median(outside), statistics.median(inside)
    print(
        f"full gc.collect(), median of {args.runs}: outside quiet_heap {med_out * 1e3:.1f} ms, "
        f"inside {med_in * 1e3:.2f} ms; inside / outside {med_in / med_out:.4f}"
    )
    runs: dict[str, list[dict[str, float]]] = {"as written": [], "autograph": []}
    for _ in range(args.runs):
        for how in ("as written", "autograph"):
            runs[how].append(in_new_python(_FIRST_PREPARE, how.replace(" ", "_")))
    medians = {
        how: {key: statistics.median(r[key] for r in found) for key in ("traced", "first_batch")}
        for how, found in runs.items()
    }
    for how, median in medians.items():
        print(
            f"first prepare() in a new process, {how}, median of {args.runs}: built (traced) "
            f"{median['traced'] * 1e3:.0f} ms, first batch out {median['first_batch'] * 1e3:.0f} ms"
        )
    ratio = medians["as written"]["traced"] / medians["autograph"]["traced"]
    print(f"built: as written / autograph {ratio:.2f}")

    import tf_keras

    model = tf_keras.applications.MobileNetV2(weights=None, include_top=False)
    frozen = [*model.trainable_weights, *model.non_trainable_weights]
    weights = json.dumps([[w.name, list(w.shape), w.dtype.name] for w in frozen])
    built: dict[str, list[float]] = {"variables": [], "zero weights": []}
    for _ in range(args.runs):
        for how in built:
            built[how].append(in_new_python(_STAND_IN_WEIGHTS, how, stdin=weights)["seconds"])
    for how, seconds in built.items():
        print(
            f"a stand-in's {len(frozen)} weights in a new process, {how}, median of "
            f"{args.runs}: {statistics.median(seconds) * 1e3:.1f} ms"
        )
    ratio = statistics.median(built["zero weights"]) / statistics.median(built["variables"])
    print(f"zero weights / variables: {ratio:.3f}")


if __name__ == "__main__":
    main()

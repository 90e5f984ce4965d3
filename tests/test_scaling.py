"""tf.distribute and mixed precision. Strategies need devices configured before TensorFlow
starts, so these run in fresh processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tf_keras

import hubtransfer as ht
from conftest import colour_images, save_tiny_tf2
from hubtransfer.registry import Backbone

TESTS = Path(__file__).parent

_PRELUDE = f"""
import json, os, sys
sys.path.insert(0, {str(TESTS)!r})
import tensorflow as tf
"""


def _python(script: str, *, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow  # starts a process or builds a real architecture
def test_mirrored_strategy_over_two_logical_cpus(tmp_path: Path) -> None:
    model_dir = save_tiny_tf2(tmp_path / "m", 16)
    out = _python(
        f"""
        cpu = tf.config.list_physical_devices("CPU")[0]
        two = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, two)
        import hubtransfer as ht
        from conftest import colour_images
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        spec = ht.Backbone("tiny", {str(model_dir)!r}, 16, 8, "tf2", True)
        model = ht.build_classifier(spec, 2, trainable=True, strategy=strategy)
        x, y = colour_images(64, 16)
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
        kinds = sorted({{type(v).__name__ for v in model.trainable_variables}})
        opt = sorted({{type(v).__name__ for v in model.optimizer.variables()[1:]}})
        data_dir = {str(tmp_path / "data")!r}
        from images import write_colour_folder
        write_colour_folder(__import__("pathlib").Path(data_dir), per_class=8)
        data = ht.load_image_folder(data_dir, validation_fraction=0.25)
        report = ht.benchmark(spec, data, epochs=2, strategy=strategy, measure_latency=False,
                              fine_tune="both", warmup_epochs=1, keep_models=True)
        # The study's own training (its optimizers' slots made before fit): mirrored too.
        frozen, tuned = (report.models[r.key] for r in report.results)
        trained = [frozen.get_layer("head").optimizer, tuned.optimizer]
        study_opt = sorted({{type(v).__name__ for o in trained for v in o.variables()[1:]}})
        print(json.dumps({{"replicas": strategy.num_replicas_in_sync, "kinds": kinds,
                          "optimizer": opt, "loss": history["loss"],
                          "study": [r.status for r in report.results],
                          "study_optimizer": study_opt,
                          "strategy": report.results[0].config["strategy"]}}))
        """
    )
    result = json.loads(out)
    assert result["replicas"] == 2
    assert result["kinds"] == ["MirroredVariable"] and result["optimizer"] == ["MirroredVariable"]
    assert all(np.isfinite(result["loss"]))
    assert result["study"] == ["ok", "ok"] and result["strategy"] == "MirroredStrategy"
    assert result["study_optimizer"] == ["MirroredVariable"]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_head_with_float32_logits(tmp_path: Path, policy: str) -> None:
    spec = Backbone("tiny", str(save_tiny_tf2(tmp_path / "m", 16)), 16, 8, "tf2", True)
    model = ht.build_classifier(spec, 2, hidden_units=(16,), mixed_precision=policy)  # type: ignore[arg-type]
    head = model.get_layer("head")
    assert head.get_layer("hidden_0").compute_dtype == policy.split("_")[1]
    assert head.get_layer("logits").compute_dtype == "float32"
    assert model.get_layer("backbone").compute_dtype == "float32"
    assert model.output.dtype.name == "float32"
    is_scaled = isinstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    assert is_scaled == (policy == "mixed_float16")
    x, y = colour_images(64, 16)
    history = model.fit(x, y, epochs=2, verbose=0).history
    assert all(np.isfinite(history["loss"]))


def test_bad_mixed_precision_policy(tmp_path: Path) -> None:
    with pytest.raises(
        ht.ConfigurationError, match=r"mixed_precision must be None, 'mixed_float16'"
    ):
        ht.build_classifier("mobilenet_v2", 2, mixed_precision="float8")  # type: ignore[arg-type]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_mirrored_on_loopback(tmp_path: Path) -> None:
    """Two worker processes on 127.0.0.1 train one head; both end with the same weights."""
    model_dir = save_tiny_tf2(tmp_path / "m", 16)
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    script = f"""
        import numpy as np
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        import hubtransfer as ht
        from conftest import colour_images
        spec = ht.Backbone("tiny", {str(model_dir)!r}, 16, 8, "tf2", True)
        model = ht.build_classifier(spec, 2, strategy=strategy)
        x, y = colour_images(64, 16)
        options = tf.data.Options()
        shard = tf.data.experimental.AutoShardPolicy.DATA
        options.experimental_distribute.auto_shard_policy = shard
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
        history = model.fit(dataset, epochs=2, verbose=0).history
        index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
        np.save({str(tmp_path)!r} + f"/head_{{index}}.npy",
                np.concatenate([w.ravel() for w in model.get_layer("head").get_weights()]))
        print(json.dumps({{"loss": history["loss"]}}))
    """
    procs = []
    try:
        for index in range(2):
            config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(config)}
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _PRELUDE + textwrap.dedent(script)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    losses = [json.loads(out.strip().splitlines()[-1])["loss"] for out, _ in outputs]
    assert all(np.isfinite(loss).all() for loss in losses)
    head_0, head_1 = np.load(tmp_path / "head_0.npy"), np.load(tmp_path / "head_1.npy")
    np.testing.assert_array_equal(head_0, head_1)

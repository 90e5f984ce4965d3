"""Shared fixtures: tiny real SavedModels (TF2 and TF1 Hub format), never the network."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
import tf_keras

from hubtransfer.registry import Backbone, BackboneRegistry, default_registry

# Module- and session-scoped fixtures run before any function-scoped one: the whole run
# gets its own cache root first (never the user's), and each test its own below.
_SESSION_CACHE = tempfile.mkdtemp(prefix="hubtransfer-test-cache-")
os.environ["HUBTRANSFER_CACHE_DIR"] = _SESSION_CACHE
atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)

TINY_SIZE = 16
TINY_DIM = 8


def save_tiny_tf2(path: Path, size: int = TINY_SIZE, dim: int = TINY_DIM, seed: int = 0) -> Path:
    """A Keras SavedModel: (size, size, 3) in [0, 1] -> conv -> BN -> pooled ``dim`` features."""
    tf_keras.utils.set_random_seed(seed)
    inputs = tf_keras.Input((size, size, 3))
    x = tf_keras.layers.Conv2D(dim, 3, activation="relu")(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    tf_keras.Model(inputs, x).save(path, save_format="tf", include_optimizer=False)
    return path


def save_tiny_tf1(path: Path, size: int = TINY_SIZE, dim: int = TINY_DIM) -> Path:
    """A TF1 Hub module: a TF1 SavedModel with a 'default' signature plus tfhub_module.pb."""
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="images")
        weights = tf.compat.v1.get_variable(
            "w", [3, dim], initializer=tf.compat.v1.random_normal_initializer(seed=1)
        )
        features = tf.matmul(tf.reduce_mean(images, axis=[1, 2]), weights)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def(
                {"images": images}, {"default": features}
            )
            builder.add_meta_graph_and_variables(
                sess, tags=[], signature_def_map={"default": signature}
            )
            builder.save()
    (path / "tfhub_module.pb").write_bytes(b"")
    return path


@pytest.fixture(autouse=True)
def _private_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own HUBTRANSFER_CACHE_DIR: never the user's, never shared."""
    root = tmp_path_factory.mktemp("hubtransfer-cache")
    monkeypatch.setenv("HUBTRANSFER_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_tf2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_tf2(tmp_path_factory.mktemp("models") / "tiny_tf2")


@pytest.fixture(scope="session")
def tiny_tf1_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_tf1(tmp_path_factory.mktemp("models") / "tiny_tf1")


@pytest.fixture()
def tiny_tf2(tiny_tf2_dir: Path) -> Backbone:
    return Backbone("tiny_tf2", str(tiny_tf2_dir), TINY_SIZE, TINY_DIM, "tf2", True, family="tiny")


@pytest.fixture()
def tiny_tf1(tiny_tf1_dir: Path) -> Backbone:
    return Backbone("tiny_tf1", str(tiny_tf1_dir), TINY_SIZE, TINY_DIM, "tf1", False, family="tiny")


@pytest.fixture()
def registry() -> BackboneRegistry:
    """A fresh copy of the built-in registry, so tests never leak registrations."""
    return default_registry().copy()


def colour_images(n: int, size: int = TINY_SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy reddish (label 0) or bluish (label 1) images in [0, 1], and labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.uniform(0.0, 0.4, (n, size, size, 3)).astype("float32")
    images[labels == 0, ..., 0] += 0.6
    images[labels == 1, ..., 2] += 0.6
    return images, labels.astype("int64")

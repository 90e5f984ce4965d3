"""A frozen classifier's saved size, measured without running its backbone.

The report measured the classifier saved as ``.h5`` (``ls -lh model.h5``), and so does
:func:`hubtransfer.benchmark`. That file holds the model's configuration and every weight
array, written uncompressed: its bytes depend on the layers' configurations and on the
weights' names, shapes and dtypes, never on their values. A
:class:`BackboneOutline` records exactly those of a frozen backbone layer. The stand-in
layer it builds (:meth:`BackboneOutline.layer`) has the same class name, configuration
and weights, and a call that only returns features of the right shape; a classifier
assembled around it saves to a file of exactly as many bytes as the real classifier's,
with the same configuration (the tests compare both, for heads with and without hidden
layers, two and more classes, both Hub formats and mixed precision); holding the loaded
backbone's own variables, it saves the very same arrays too. The backbone's SavedModel
is then neither loaded nor traced for the measurement: built from the loaded layer's
own variables, the stand-in spares tracing it; built from an outline kept in the store,
it spares loading it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hubtransfer._tf import tf, tf_keras

__all__ = ["OUTLINE_FORMAT", "BackboneOutline", "frozen_weights", "measure_classifier"]

logger = logging.getLogger(__name__)

#: Bumped whenever what an outline records changes: older outlines are then not read.
OUTLINE_FORMAT = 1


@dataclass(frozen=True)
class BackboneOutline:
    """What a frozen backbone layer contributes to a saved ``.h5``, without its graph.

    Attributes:
        class_name: The layer's class name (saved in the model's configuration).
        config: The layer's ``get_config()``, JSON-ready.
        weights: ``(name, shape, dtype)`` of each weight, in the order the file lists
            them (trainable, then non-trainable, of the frozen layer).
        feature_dim: Width of the pooled features the layer returns.
    """

    class_name: str
    config: dict[str, Any]
    weights: tuple[tuple[str, tuple[int, ...], str], ...]
    feature_dim: int

    @classmethod
    def of(cls, layer: tf_keras.layers.Layer, feature_dim: int) -> BackboneOutline | None:
        """The outline of a frozen ``layer``; None when a stand-in could not match it
        (a configuration that is not JSON, a weight that is not numeric or not named as
        TensorFlow names variables): the classifier is then measured the usual way."""
        if layer.trainable:
            return None
        if tf_keras.utils.get_registered_name(type(layer)) != type(layer).__name__:
            return None  # saved under a registered name the stand-in's class cannot take
        variables = frozen_weights(layer)
        if not all(v.dtype.is_floating or v.dtype.is_integer or v.dtype.is_bool for v in variables):
            return None  # zero-filled stand-ins are numeric
        weights = tuple(
            (str(w.name), tuple(int(d) for d in w.shape), str(w.dtype.name)) for w in variables
        )
        if not all(name.endswith(":0") for name, _, _ in weights):
            return None  # every variable's name ends so: not a plain variable
        try:
            config = json.loads(json.dumps(layer.get_config()))
        except (TypeError, ValueError, NotImplementedError):
            return None
        return cls(type(layer).__name__, config, weights, int(feature_dim))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": OUTLINE_FORMAT,
            "class_name": self.class_name,
            "config": self.config,
            "weights": [[name, list(shape), dtype] for name, shape, dtype in self.weights],
            "feature_dim": self.feature_dim,
        }

    @classmethod
    def from_json(cls, values: object) -> BackboneOutline:
        """The outline :meth:`to_json` wrote. Raises ValueError on anything else."""
        if not isinstance(values, dict) or values.get("format") != OUTLINE_FORMAT:
            raise ValueError("not an outline of this format")
        try:
            weights = tuple(
                (str(name), tuple(int(d) for d in shape), str(tf.as_dtype(dtype).name))
                for name, shape, dtype in values["weights"]
            )
            outline = cls(
                str(values["class_name"]),
                dict(values["config"]),
                weights,
                int(values["feature_dim"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed outline: {exc}") from exc
        if not outline.class_name.isidentifier() or not all(
            name.endswith(":0") for name, _, _ in weights
        ):
            raise ValueError("malformed outline: class or weight names")
        return outline

    def layer(self, variables: list[tf.Variable] | None = None) -> tf_keras.layers.Layer:
        """The frozen stand-in: the backbone's class name, configuration and weights.

        Args:
            variables: The loaded backbone's own weights, in :attr:`weights` order, to
                hold instead of zero weights (:class:`_ZeroWeight`: nothing allocated).
        """
        if variables is None:
            variables = [_ZeroWeight(name, shape, dtype) for name, shape, dtype in self.weights]
        if [(v.name, tuple(v.shape)) for v in variables] != [(n, s) for n, s, _ in self.weights]:
            raise ValueError("the variables do not match the outline")
        # The saved configuration names the layer's class: the stand-in carries its name.
        stand_in = type(self.class_name, (_StandIn,), {})
        return stand_in(self, variables)


def frozen_weights(layer: tf_keras.layers.Layer) -> list[tf.Variable]:
    """A frozen layer's weights in the order a saved ``.h5`` lists them."""
    return [*layer.trainable_weights, *layer.non_trainable_weights]


class _ZeroWeight(tf.Variable):
    """A weight's name, shape and dtype, read as zeros: all a saved ``.h5`` takes from a
    stand-in's weight. A ``tf.Variable``, as the ``.h5`` writer requires, that holds no
    tensor: in a new process MobileNetV2's 260 weights took 239 ms as zero-filled
    variables, 1 ms as these (``python benchmarks/fixed_costs.py``; the files saved
    are compared in ``tests/test_sizing.py``)."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
        # No Variable.__init__ on purpose: it only raises; nothing here is a tensor.
        self._outline = (name, tf.TensorShape(shape), tf.as_dtype(dtype))

    @property
    def name(self) -> str:
        return self._outline[0]

    @property
    def shape(self) -> tf.TensorShape:
        return self._outline[1]

    @property
    def dtype(self) -> tf.DType:
        return self._outline[2]

    @property
    def trainable(self) -> bool:
        return False

    def numpy(self) -> np.ndarray:
        return np.zeros(self.shape, self.dtype.as_numpy_dtype)

    def __repr__(self) -> str:
        return f"<_ZeroWeight {self.name!r} shape={tuple(self.shape)} dtype={self.dtype.name}>"


class _StandIn(tf_keras.layers.Layer):
    """A frozen layer holding given variables, returning zero features (see the module)."""

    def __init__(self, outline: BackboneOutline, variables: list[tf.Variable]) -> None:
        super().__init__(trainable=False, name=outline.config.get("name", "backbone"))
        self._outline_config = outline.config
        self._feature_dim = outline.feature_dim
        for variable in variables:
            self.add_weight(
                name=variable.name,
                shape=variable.shape,
                dtype=variable.dtype,
                trainable=False,
                experimental_autocast=False,
                getter=lambda *_, variable=variable, **__: variable,
            )

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.zeros([tf.shape(inputs)[0], self._feature_dim], tf.float32)

    def get_config(self) -> dict[str, Any]:
        return dict(self._outline_config)


def measure_classifier(
    model: tf_keras.Model, target: Path | None = None, *, weights_only_fallback: bool = True
) -> dict[str, int]:
    """``model_bytes`` (the classifier saved as ``.h5``), ``params_total`` and
    ``params_trainable``; the file is moved to ``target`` (atomically) if given.

    A model whose configuration cannot be serialised is measured by its weights file
    (``save_weights``) instead; without ``weights_only_fallback`` it raises then, as a
    stand-in must (its bytes would not be the real classifier's)."""
    return {
        "model_bytes": _saved_h5_bytes(model, target, weights_only_fallback),
        "params_total": int(model.count_params()),
        "params_trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
    }


def _saved_h5_bytes(model: tf_keras.Model, target: Path | None, weights_only_fallback: bool) -> int:
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=".hubtransfer-model-", dir=None if target is None else target.parent
    ) as tmp:
        path = Path(tmp) / "model.h5"
        try:
            with warnings.catch_warnings():  # "HDF5 is legacy": it is what the report measured
                warnings.simplefilter("ignore", UserWarning)
                model.save(path, save_format="h5", include_optimizer=False)
        except Exception:  # a layer that cannot be serialised: weights are the size anyway
            if not weights_only_fallback:
                raise
            logger.debug("Full .h5 save failed; measuring the weights file", exc_info=True)
            model.save_weights(path, save_format="h5")
        size = path.stat().st_size
        if target is not None:
            os.replace(path, target)
        return size

"""Model building: a Hub backbone plus a classification head, compiled.

The head is its own ``tf_keras`` model (layer name ``"head"``) applied to the backbone's
pooled features, so the same weights can be trained on cached features and then used
inside the full classifier.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast, get_args

from hubtransfer._tf import tf, tf_keras
from hubtransfer.config import DEFAULTS
from hubtransfer.errors import BackboneLoadError, ConfigurationError
from hubtransfer.loading import DEFAULT_TIMEOUT_S, load_backbone_layer
from hubtransfer.registry import Backbone, BackboneRegistry, resolve_backbone
from hubtransfer.settings import MixedPrecision, OptimizerName

__all__ = [
    "REPORT_HEAD",
    "Head",
    "MixedPrecision",
    "OptimizerName",
    "assemble_classifier",
    "build_classifier",
    "build_head",
    "compile_classifier",
    "make_optimizer",
]

_OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
_POLICIES: tuple[str, ...] = get_args(MixedPrecision)


def check_mixed_precision(policy: object) -> MixedPrecision | None:
    """``policy`` if it is None or an allowed mixed-precision policy name."""
    if policy is not None and policy not in _POLICIES:
        raise ConfigurationError(
            f"mixed_precision must be None, {', '.join(map(repr, _POLICIES))}. "
            f"Received: mixed_precision={policy!r}."
        )
    return cast(MixedPrecision | None, policy)


def strategy_scope(strategy: tf.distribute.Strategy | None) -> Any:
    """``strategy.scope()``, or a no-op context without a strategy."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


@dataclass(frozen=True)
class Head:
    """The classification head put on top of the pooled backbone features.

    The default (dropout 0.2 then one Dense layer of logits) is what TF Hub's
    make_image_classifier and the Model Makers use.

    Attributes:
        hidden_units: Widths of hidden Dense layers before the logits; ``()`` for none.
        dropout: Dropout rate before each Dense layer, in [0, 1).
        activation: Activation of the hidden layers.
    """

    hidden_units: tuple[int, ...] = field(default=())
    dropout: float = DEFAULTS.dropout
    activation: str = "relu"

    def __post_init__(self) -> None:
        units = tuple(self.hidden_units)
        if any(isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in units):
            raise ConfigurationError(
                "hidden_units must be a sequence of positive integers, e.g. (128,). "
                f"Received: hidden_units={self.hidden_units!r}."
            )
        object.__setattr__(self, "hidden_units", units)
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, numbers.Real)
            or not 0.0 <= float(self.dropout) < 1.0
        ):
            raise ConfigurationError(
                "dropout must be a number in [0, 1), e.g. 0.2; 0 disables it. "
                f"Received: dropout={self.dropout!r}."
            )


#: The report's head: Dense(128, relu) -> Dropout(0.5) -> logits.
REPORT_HEAD = Head(hidden_units=(128,), dropout=0.5)


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise ConfigurationError(
            f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}."
        )
    if num_classes < 2:
        raise ConfigurationError(
            "num_classes must be >= 2 (2 gives one binary logit, more give one logit per "
            f"class). Received: num_classes={num_classes}."
        )
    return int(num_classes)


def make_optimizer(
    optimizer: OptimizerName | tf_keras.optimizers.Optimizer, learning_rate: float
) -> tf_keras.optimizers.Optimizer:
    """A fresh ``tf_keras`` optimizer from a name, or ``optimizer`` itself if it is one."""
    if isinstance(optimizer, tf_keras.optimizers.Optimizer):
        return optimizer
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, numbers.Real)
        or not (learning_rate > 0)
    ):
        raise ConfigurationError(
            f"learning_rate must be a positive number, e.g. 1e-3. Received: {learning_rate!r}."
        )
    lr = float(learning_rate)
    if optimizer == "adam":
        return tf_keras.optimizers.Adam(lr)
    if optimizer == "adamw":
        return tf_keras.optimizers.AdamW(lr)
    if optimizer == "sgd":
        return tf_keras.optimizers.SGD(lr, momentum=0.9)
    if optimizer == "rmsprop":
        return tf_keras.optimizers.RMSprop(lr)
    raise ConfigurationError(
        f"Unknown optimizer {optimizer!r}. Allowed: {', '.join(map(repr, _OPTIMIZERS))}, or a "
        "tf_keras.optimizers.Optimizer instance (not a keras 3 one)."
    )


def compile_classifier(
    model: tf_keras.Model,
    num_classes: int,
    *,
    optimizer: OptimizerName | tf_keras.optimizers.Optimizer = "adam",
    learning_rate: float = DEFAULTS.learning_rate,
    mixed_precision: MixedPrecision | None = None,
) -> tf_keras.Model:
    """Compiles ``model`` (logits out) with the loss and accuracy for ``num_classes``.

    Two classes: one logit, ``BinaryCrossentropy(from_logits=True)`` and accuracy with
    the logit thresholded at 0 (probability 0.5). More: one logit per class and sparse
    categorical cross-entropy on integer labels.
    """
    num_classes = _check_num_classes(num_classes)
    opt = make_optimizer(optimizer, learning_rate)
    if check_mixed_precision(mixed_precision) == "mixed_float16":
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
        opt = tf_keras.mixed_precision.LossScaleOptimizer(opt)
    if num_classes == 2:
        loss: tf_keras.losses.Loss = tf_keras.losses.BinaryCrossentropy(from_logits=True)
        metric: tf_keras.metrics.Metric = tf_keras.metrics.BinaryAccuracy(
            name="accuracy", threshold=0.0
        )
    else:
        loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metric = tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=opt, loss=loss, metrics=[metric])
    return model


def build_head(
    feature_dim: int,
    num_classes: int,
    head: Head = Head(),
    *,
    mixed_precision: MixedPrecision | None = None,
) -> tf_keras.Model:
    """The head alone: pooled features ``(batch, feature_dim)`` -> logits.

    Under ``mixed_precision`` the hidden layers compute in low precision; the logits layer
    stays float32, so the loss is computed in float32.
    """
    num_classes = _check_num_classes(num_classes)
    policy = check_mixed_precision(mixed_precision) or "float32"
    inputs = tf_keras.Input(shape=(feature_dim,), name="features")
    x = inputs
    for i, units in enumerate(head.hidden_units):
        x = tf_keras.layers.Dense(
            units, activation=head.activation, name=f"hidden_{i}", dtype=policy
        )(x)
        if head.dropout:
            x = tf_keras.layers.Dropout(head.dropout, name=f"dropout_{i}", dtype=policy)(x)
    if head.dropout and not head.hidden_units:
        x = tf_keras.layers.Dropout(head.dropout, name="dropout", dtype=policy)(x)
    outputs = tf_keras.layers.Dense(
        1 if num_classes == 2 else num_classes, name="logits", dtype="float32"
    )(x)
    return tf_keras.Model(inputs, outputs, name="head")


def build_classifier(
    backbone: str | Backbone,
    num_classes: int,
    *,
    trainable: bool = False,
    hidden_units: Sequence[int] = (),
    dropout: float = DEFAULTS.dropout,
    activation: str = "relu",
    optimizer: OptimizerName | tf_keras.optimizers.Optimizer = "adam",
    learning_rate: float = DEFAULTS.learning_rate,
    registry: BackboneRegistry | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    strategy: tf.distribute.Strategy | None = None,
    mixed_precision: MixedPrecision | None = None,
) -> tf_keras.Model:
    """A compiled ``tf_keras`` classifier: backbone -> head -> logits.

    The model takes float32 images of shape ``(image_size, image_size, 3)`` with values in
    ``backbone.input_range`` (see :func:`hubtransfer.prepare`) and returns logits: one for
    two classes, ``num_classes`` otherwise.

    Args:
        backbone: A registered name or a :class:`Backbone`.
        num_classes: Number of classes, at least 2.
        trainable: Fine-tune the backbone too. Refused for TF1 modules before any download.
        hidden_units: Hidden Dense layers of the head; the report's head is ``(128,)``.
        dropout: Dropout rate in the head; the report's head uses 0.5.
        activation: Activation of the hidden layers.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9), ``"rmsprop"`` or a
            ``tf_keras`` optimizer instance.
        learning_rate: Learning rate for a named optimizer.
        registry: Where to look names up; the default registry if None.
        timeout: Seconds a network operation may block while fetching the backbone.
        strategy: A ``tf.distribute`` strategy; every variable (backbone, head,
            optimizer) is created under its scope, so ``fit`` runs distributed.
        mixed_precision: ``"mixed_float16"`` (with loss scaling) or ``"mixed_bfloat16"``
            for the head; the logits and loss stay float32. The Hub layer stays float32:
            its SavedModel is traced for float32 inputs (see docs/scaling.md).

    Raises:
        ConfigurationError: A bad argument (checked before anything is loaded).
        NotFineTunableError: ``trainable=True`` on a TF1 module.
        BackboneLoadError: The backbone cannot be fetched or does not match its spec.
    """
    spec = resolve_backbone(backbone, registry)
    head = Head(tuple(hidden_units), dropout, activation)
    num_classes = _check_num_classes(num_classes)
    make_optimizer(optimizer, learning_rate)  # validate before any download
    check_mixed_precision(mixed_precision)
    with strategy_scope(strategy):
        return _build(
            spec,
            num_classes,
            head,
            trainable=trainable,
            optimizer=optimizer,
            learning_rate=learning_rate,
            registry=registry,
            timeout=timeout,
            mixed_precision=mixed_precision,
        )


def _build(
    spec: Backbone,
    num_classes: int,
    head: Head,
    *,
    trainable: bool,
    optimizer: OptimizerName | tf_keras.optimizers.Optimizer,
    learning_rate: float,
    registry: BackboneRegistry | None,
    timeout: float,
    mixed_precision: MixedPrecision | None,
) -> tf_keras.Model:
    layer = load_backbone_layer(spec, trainable=trainable, registry=registry, timeout=timeout)
    return assemble_classifier(
        spec,
        layer,
        build_head(spec.feature_dim, num_classes, head, mixed_precision=mixed_precision),
        num_classes,
        optimizer=optimizer,
        learning_rate=learning_rate,
        mixed_precision=mixed_precision,
    )


def check_feature_shape(spec: Backbone, shape: Sequence[int | None]) -> None:
    """Raises BackboneLoadError unless ``shape`` is ``(batch, spec.feature_dim)``."""
    if len(shape) != 2 or shape[-1] not in (None, spec.feature_dim):
        per_image = ", ".join(str(n) for n in shape[1:])
        raise BackboneLoadError(
            f"Backbone {spec.name!r} returned features of shape (batch, {per_image}), but "
            f"its spec promises pooled features (batch, {spec.feature_dim}). Use a "
            "feature-vector model (not a classification model), or fix feature_dim with "
            "dataclasses.replace()."
        )


def assemble_classifier(
    spec: Backbone,
    layer: tf_keras.layers.Layer,
    head_model: tf_keras.Model,
    num_classes: int,
    *,
    optimizer: OptimizerName | tf_keras.optimizers.Optimizer = "adam",
    learning_rate: float = DEFAULTS.learning_rate,
    mixed_precision: MixedPrecision | None = None,
) -> tf_keras.Model:
    """The compiled classifier ``image -> layer -> head_model -> logits``.

    ``head_model`` (from :func:`build_head`) goes in as it is, trained weights and all: a
    head trained on cached features becomes the classifier's head without a copy.
    """
    inputs = tf_keras.Input(shape=(spec.image_size, spec.image_size, 3), name="image")
    features = layer(inputs)
    check_feature_shape(spec, tuple(features.shape))
    model = tf_keras.Model(inputs, head_model(features), name=f"{spec.name}_classifier")
    return compile_classifier(
        model,
        num_classes,
        optimizer=optimizer,
        learning_rate=learning_rate,
        mixed_precision=mixed_precision,
    )

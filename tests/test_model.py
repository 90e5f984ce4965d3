from __future__ import annotations

import numpy as np
import pytest
import tf_keras

import hubtransfer as ht
from conftest import colour_images
from hubtransfer.model import REPORT_HEAD, Head, build_head, compile_classifier
from hubtransfer.registry import Backbone


def test_binary_classifier_has_one_logit_and_learns(tiny_tf2: Backbone) -> None:
    # Seeded, and a rate at which the head converges from any initialisation within the
    # epochs (at 1e-3 some seeds need more than 48 steps to move off the majority class).
    tf_keras.utils.set_random_seed(0)
    model = ht.build_classifier(tiny_tf2, 2, learning_rate=5e-2)
    assert isinstance(model, tf_keras.Model)
    assert model.output_shape == (None, 1)
    assert isinstance(model.loss, tf_keras.losses.BinaryCrossentropy)
    assert model.loss.get_config()["from_logits"]
    x, y = colour_images(256)
    history = model.fit(x[:192], y[:192], epochs=10, verbose=0, validation_data=(x[192:], y[192:]))
    assert history.history["val_accuracy"][-1] >= 0.9


def test_binary_accuracy_thresholds_logits_at_zero() -> None:
    # A model whose logit is always 0.25 (probability 0.56): class 1 everywhere. The
    # report's notebook thresholded logits at 0.5 and would call these class 0.
    model = tf_keras.Sequential(
        [
            tf_keras.Input((1,)),
            tf_keras.layers.Dense(
                1, kernel_initializer="zeros", bias_initializer=tf_keras.initializers.Constant(0.25)
            ),
        ]
    )
    compile_classifier(model, 2)
    x = np.zeros((8, 1), "float32")
    _, accuracy = model.evaluate(x, np.ones(8, "int64"), verbose=0)
    assert accuracy == 1.0


def test_multiclass_classifier_outputs_n_logits(tiny_tf2: Backbone) -> None:
    model = ht.build_classifier(tiny_tf2, 5, hidden_units=(16,), dropout=0.5)
    assert model.output_shape == (None, 5)
    x = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype("float32")
    assert model.predict(x, verbose=0).shape == (4, 5)
    assert isinstance(model.loss, tf_keras.losses.SparseCategoricalCrossentropy)


def test_report_head_is_reproducible(tiny_tf2: Backbone) -> None:
    model = ht.build_classifier(
        tiny_tf2, 2, hidden_units=REPORT_HEAD.hidden_units, dropout=REPORT_HEAD.dropout
    )
    head = model.get_layer("head")
    kinds = [type(layer).__name__ for layer in head.layers[1:]]
    assert kinds == ["Dense", "Dropout", "Dense"]
    assert head.layers[1].units == 128 and head.layers[2].rate == 0.5


def test_frozen_backbone_trains_only_the_head(tiny_tf2: Backbone) -> None:
    frozen = ht.build_classifier(tiny_tf2, 2)
    tuned = ht.build_classifier(tiny_tf2, 2, trainable=True)
    head_weights = len(frozen.get_layer("head").trainable_weights)
    assert len(frozen.trainable_weights) == head_weights
    assert len(tuned.trainable_weights) > head_weights


def test_tf1_module_builds_frozen_and_learns(tiny_tf1: Backbone) -> None:
    model = ht.build_classifier(tiny_tf1, 2)
    x, y = colour_images(256)
    history = model.fit(x[:192], y[:192], epochs=10, verbose=0, validation_data=(x[192:], y[192:]))
    assert history.history["val_accuracy"][-1] >= 0.9


def test_build_accepts_registered_name(tiny_tf2: Backbone, registry: ht.BackboneRegistry) -> None:
    registry.register(tiny_tf2)
    model = ht.build_classifier("tiny_tf2", 3, registry=registry, optimizer="sgd")
    assert type(model.optimizer).__name__ == "SGD"


def test_feature_dim_mismatch_is_reported(tiny_tf2: Backbone) -> None:
    import dataclasses

    wrong = dataclasses.replace(tiny_tf2, feature_dim=99)
    with pytest.raises(ht.BackboneLoadError, match=r"returned features of shape \(batch, 8\).*99"):
        ht.build_classifier(wrong, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, r"num_classes must be >= 2.*Received: num_classes=1"),
        ({"num_classes": 2.0}, r"num_classes must be an integer >= 2"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\).*Received: dropout=1.0"),
        ({"dropout": -0.1}, r"dropout must be a number in \[0, 1\)"),
        ({"optimizer": "adagrad"}, r"Unknown optimizer 'adagrad'. Allowed: 'adam', 'adamw'"),
        ({"learning_rate": 0}, r"learning_rate must be a positive number"),
        ({"hidden_units": (128, 0)}, r"hidden_units must be a sequence of positive integers"),
    ],
)
def test_bad_arguments_raise_before_loading(kwargs: dict[str, object], message: str) -> None:
    args = {"num_classes": 2, **kwargs}
    # A remote handle: if validation came after loading, this would be a BackboneLoadError.
    with pytest.raises(ht.ConfigurationError, match=message):
        ht.build_classifier("mobilenet_v2", **args)  # type: ignore[arg-type]


def test_build_head_alone_maps_features_to_logits() -> None:
    head = build_head(12, 4, Head(hidden_units=(8,), dropout=0.0))
    assert head.input_shape == (None, 12) and head.output_shape == (None, 4)
    assert [type(layer).__name__ for layer in head.layers[1:]] == ["Dense", "Dense"]

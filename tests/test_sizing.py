"""A frozen classifier measured around its backbone's outline is the real one, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

import hubtransfer as ht
from conftest import TINY_DIM
from hubtransfer.loading import load_backbone_layer
from hubtransfer.model import MixedPrecision, assemble_classifier, build_head
from hubtransfer.registry import Backbone
from hubtransfer.sizing import BackboneOutline, measure_classifier

HEADS = [ht.Head(), ht.REPORT_HEAD, ht.Head(hidden_units=(64, 7), dropout=0.5)]


def _saved(model: object, path: Path) -> tuple[dict[str, int], str]:
    size = measure_classifier(model, path)  # type: ignore[arg-type]
    with h5py.File(path, "r") as f:
        config = f.attrs["model_config"]
    assert size["model_bytes"] == path.stat().st_size
    return size, config if isinstance(config, str) else config.decode("utf-8")


@pytest.mark.parametrize("fmt", ["tf2", "tf1"])
@pytest.mark.parametrize("precision", [None, "mixed_float16"])
def test_stand_in_classifier_saves_to_the_real_bytes(
    tiny_tf2: Backbone,
    tiny_tf1: Backbone,
    tmp_path: Path,
    fmt: str,
    precision: MixedPrecision | None,
) -> None:
    spec = tiny_tf2 if fmt == "tf2" else tiny_tf1
    layer = load_backbone_layer(spec)
    outline = BackboneOutline.of(layer, spec.feature_dim)
    assert outline is not None
    kept = BackboneOutline.from_json(json.loads(json.dumps(outline.to_json())))  # via the store
    variables = [*layer.trainable_weights, *layer.non_trainable_weights]
    for i, head in enumerate(HEADS):
        for classes in (2, 5):
            trained = build_head(TINY_DIM, classes, head, mixed_precision=precision)
            stand_ins = {"own variables": outline.layer(variables), "kept outline": kept.layer()}
            built = {
                name: assemble_classifier(
                    spec, backbone, trained, classes, mixed_precision=precision
                )
                for name, backbone in {"real": layer, **stand_ins}.items()
            }
            saved = {k: _saved(m, tmp_path / f"{i}-{classes}-{k}.h5") for k, m in built.items()}
            assert saved["own variables"] == saved["real"], (head, classes)
            assert saved["kept outline"] == saved["real"], (head, classes)
    assert kept.weights == outline.weights and len(outline.weights) > 0


def test_stand_in_with_own_variables_is_a_loadable_copy_of_the_real_file(
    tiny_tf2: Backbone, tmp_path: Path
) -> None:
    layer = load_backbone_layer(tiny_tf2)
    outline = BackboneOutline.of(layer, tiny_tf2.feature_dim)
    assert outline is not None
    head = build_head(TINY_DIM, 3, ht.REPORT_HEAD)
    variables = [*layer.trainable_weights, *layer.non_trainable_weights]
    real = tmp_path / "real.h5"
    stand_in = tmp_path / "stand_in.h5"
    measure_classifier(assemble_classifier(tiny_tf2, layer, head, 3), real)
    measure_classifier(assemble_classifier(tiny_tf2, outline.layer(variables), head, 3), stand_in)
    with h5py.File(real, "r") as a, h5py.File(stand_in, "r") as b:
        names: list[str] = []
        a.visit(names.append)
        assert names
        for name in names:
            if isinstance(a[name], h5py.Dataset):
                assert (a[name][()] == b[name][()]).all(), name


def test_outline_refuses_what_a_stand_in_cannot_match(tiny_tf2: Backbone) -> None:
    trainable = load_backbone_layer(tiny_tf2, trainable=True)
    assert BackboneOutline.of(trainable, TINY_DIM) is None  # a frozen classifier's only
    frozen = load_backbone_layer(tiny_tf2)
    outline = BackboneOutline.of(frozen, TINY_DIM)
    assert outline is not None
    good = outline.to_json()
    for junk in (
        None,
        [],
        {**good, "format": 0},
        {k: v for k, v in good.items() if k != "weights"},
        {**good, "weights": [["w:1", [3], "float32"]]},
        {**good, "class_name": "not a name"},
        {**good, "weights": 3},
    ):
        with pytest.raises(ValueError):
            BackboneOutline.from_json(junk)
    with pytest.raises(ValueError, match="do not match"):
        outline.layer([])


def test_a_model_that_cannot_be_saved_whole_is_measured_by_its_weights_unless_refused(
    tmp_path: Path,
) -> None:
    import tf_keras

    class Unsaveable(tf_keras.layers.Layer):  # type: ignore[misc]
        def call(self, inputs: object) -> object:
            return inputs

        def get_config(self) -> dict[str, object]:
            raise NotImplementedError("this layer cannot be serialised")

    inputs = tf_keras.Input((4,))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(2)(Unsaveable()(inputs)))
    weights = tmp_path / "weights.h5"
    model.save_weights(weights, save_format="h5")
    assert measure_classifier(model)["model_bytes"] == weights.stat().st_size
    with pytest.raises(NotImplementedError):
        measure_classifier(model, weights_only_fallback=False)

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import hubtransfer as ht
from hubtransfer.offline import export_backbone, exportable_backbones
from hubtransfer.registry import BackboneRegistry


@pytest.fixture()
def small_registry(registry: BackboneRegistry) -> BackboneRegistry:
    """Real architectures at 32 px so exports take seconds."""
    for name in ("mobilenet_v2", "mobilenet_v3_small"):
        registry.register(dataclasses.replace(registry.get(name), image_size=32), overwrite=True)
    return registry


def test_export_keeps_hub_contract(tmp_path: Path, small_registry: BackboneRegistry) -> None:
    spec = export_backbone("mobilenet_v2", tmp_path / "mnv2", registry=small_registry)
    assert spec.handle == str((tmp_path / "mnv2").resolve())
    assert (spec.hub_format, spec.fine_tunable, spec.image_size) == ("tf2", True, 32)
    layer = ht.load_backbone_layer(spec)
    features = layer(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32"))
    assert features.shape == (2, 1280)
    params = sum(int(np.prod(v.shape)) for v in layer.weights)
    assert params == 2_257_984  # keras.applications MobileNetV2, include_top=False


def test_mobilenet_v3_export_matches_hub_feature_dim(
    tmp_path: Path, small_registry: BackboneRegistry
) -> None:
    spec = export_backbone("mobilenet_v3_small", tmp_path / "v3", registry=small_registry)
    model = ht.build_classifier(spec, 3)
    assert model.get_layer("backbone").output_shape == (None, 1024)


def test_export_is_reused_unless_rebuild(tmp_path: Path, small_registry: BackboneRegistry) -> None:
    target = tmp_path / "mnv2"
    export_backbone("mobilenet_v2", target, registry=small_registry)
    stamp = (target / "saved_model.pb").stat().st_mtime_ns
    export_backbone("mobilenet_v2", target, registry=small_registry)
    assert (target / "saved_model.pb").stat().st_mtime_ns == stamp
    export_backbone("mobilenet_v2", target, registry=small_registry, rebuild=True)
    assert (target / "saved_model.pb").stat().st_mtime_ns != stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_calibration_restores_feature_spread(
    tmp_path: Path, small_registry: BackboneRegistry
) -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(32, 32, 32, 3)).astype("float32")
    raw = ht.load_backbone_layer(
        export_backbone("mobilenet_v2", tmp_path / "raw", registry=small_registry)
    )
    calibrated = ht.load_backbone_layer(
        export_backbone(
            "mobilenet_v2", tmp_path / "cal", registry=small_registry, calibration_images=images
        )
    )
    raw_std = float(np.std(raw(images)))
    cal_std = float(np.std(calibrated(images)))
    assert raw_std < 1e-6 < 1e-2 < cal_std


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bit_s_r50x1"}, r"No Keras architecture is known for backbone 'bit_s_r50x1'"),
        ({"weights": "coco"}, r"weights must be None \(random\) or 'imagenet'"),
        ({"calibration_images": np.zeros((2, 8, 8, 3))}, r"must have shape \(n, 224, 224, 3\)"),
    ],
)
def test_bad_export_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    args = {"name": "mobilenet_v2", **kwargs}
    with pytest.raises(ht.ConfigurationError, match=message):
        export_backbone(directory=tmp_path, **args)  # type: ignore[arg-type]


def test_exportable_backbones_are_registered() -> None:
    names = exportable_backbones()
    assert {"mobilenet_v2", "efficientnet_b0", "efficientnetv2_s", "inception_v3"} <= set(names)
    for name in names:
        ht.get_backbone(name)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "params"), [("mobilenet_v2", 2_257_984), ("efficientnet_b0", 4_049_571)]
)
def test_real_size_exports_match_facts(tmp_path: Path, name: str, params: int) -> None:
    spec = export_backbone(name, tmp_path / name)
    layer = ht.load_backbone_layer(spec)
    size = spec.image_size
    features = layer(np.zeros((1, size, size, 3), "float32"))
    assert features.shape == (1, 1280)
    assert sum(int(np.prod(v.shape)) for v in layer.weights) == params

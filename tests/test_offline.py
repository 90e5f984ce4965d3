from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import hubtransfer as ht
from hubtransfer._fs import MARKER, read_marker
from hubtransfer.offline import export_backbone, exportable_backbones
from hubtransfer.registry import BackboneRegistry


@pytest.fixture()
def small_registry(registry: BackboneRegistry) -> BackboneRegistry:
    """Real architectures at 32 px so exports take seconds."""
    for name in ("mobilenet_v2", "mobilenet_v3_small"):
        registry.register(dataclasses.replace(registry.get(name), image_size=32), overwrite=True)
    return registry


@pytest.mark.slow  # starts a process or builds a real architecture
def test_export_keeps_hub_contract(tmp_path: Path, small_registry: BackboneRegistry) -> None:
    spec = export_backbone("mobilenet_v2", tmp_path / "mnv2", registry=small_registry)
    assert spec.handle == str((tmp_path / "mnv2").resolve())
    assert (spec.hub_format, spec.fine_tunable, spec.image_size) == ("tf2", True, 32)
    layer = ht.load_backbone_layer(spec)
    features = layer(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32"))
    assert features.shape == (2, 1280)
    params = sum(int(np.prod(v.shape)) for v in layer.weights)
    assert params == 2_257_984  # keras.applications MobileNetV2, include_top=False


@pytest.mark.slow  # starts a process or builds a real architecture
def test_mobilenet_v3_export_matches_hub_feature_dim(
    tmp_path: Path, small_registry: BackboneRegistry
) -> None:
    spec = export_backbone("mobilenet_v3_small", tmp_path / "v3", registry=small_registry)
    model = ht.build_classifier(spec, 3)
    assert model.get_layer("backbone").output_shape == (None, 1024)


@pytest.mark.slow  # starts a process or builds a real architecture
def test_export_is_reused_unless_rebuild(tmp_path: Path, small_registry: BackboneRegistry) -> None:
    target = tmp_path / "mnv2"
    export_backbone("mobilenet_v2", target, registry=small_registry)
    marker = read_marker(target)
    assert marker is not None and marker["kind"] == "backbone stand-in"
    assert marker["recipe"] == {
        "name": "mobilenet_v2",
        "weights": None,
        "image_size": 32,
        "calibrated": False,
    }
    stamp = (target / "saved_model.pb").stat().st_mtime_ns
    export_backbone("mobilenet_v2", target, registry=small_registry)
    assert (target / "saved_model.pb").stat().st_mtime_ns == stamp
    export_backbone("mobilenet_v2", target, registry=small_registry, rebuild=True)
    assert (target / "saved_model.pb").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnv2"]  # no staging, no old copy


@pytest.mark.slow  # starts a process or builds a real architecture
def test_another_recipe_needs_overwrite(tmp_path: Path, small_registry: BackboneRegistry) -> None:
    target = tmp_path / "mnv2"
    export_backbone("mobilenet_v2", target, registry=small_registry)
    stamp = (target / "saved_model.pb").stat().st_mtime_ns
    images = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    with pytest.raises(
        ht.ExportError,
        match=r"holds another stand-in \(mobilenet_v2 at 32 px, weights=None, uncalibrated\); "
        r"this export is .* calibrated. Pass overwrite=True",
    ):
        export_backbone("mobilenet_v2", target, registry=small_registry, calibration_images=images)
    assert (target / "saved_model.pb").stat().st_mtime_ns == stamp
    export_backbone(
        "mobilenet_v2", target, registry=small_registry, calibration_images=images, overwrite=True
    )
    marker = read_marker(target)
    assert marker is not None and marker["recipe"]["calibrated"] is True  # type: ignore[index]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnv2"]


@pytest.mark.slow  # starts a process or builds a real architecture
def test_stand_in_from_an_older_version_is_reused(
    tmp_path: Path, small_registry: BackboneRegistry
) -> None:
    target = tmp_path / "mnv2"
    export_backbone("mobilenet_v2", target, registry=small_registry)
    marker = read_marker(target)
    assert marker is not None
    (target / MARKER).unlink()  # what versions before the shared marker left behind:
    (target / "hubtransfer_backbone.json").write_text(json.dumps(marker["recipe"]))
    stamp = (target / "saved_model.pb").stat().st_mtime_ns
    export_backbone("mobilenet_v2", target, registry=small_registry)
    assert (target / "saved_model.pb").stat().st_mtime_ns == stamp
    assert read_marker(target) == marker  # adopted, so rebuild=True may now replace it


@pytest.mark.parametrize("flags", [{}, {"overwrite": True}, {"rebuild": True}])
def test_export_never_replaces_a_users_directory(
    tmp_path: Path, small_registry: BackboneRegistry, flags: dict[str, bool]
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    content = b"weights I trained for a week \x00\xff"
    (folder / "mine.h5").write_bytes(content)
    (folder / "saved_model.pb").write_bytes(b"my own SavedModel")
    with pytest.raises(
        ht.ExportError,
        match=r"holds files hubtransfer did not write as a backbone stand-in; it is left "
        r"untouched. Choose a new directory",
    ):
        export_backbone("mobilenet_v2", folder, registry=small_registry, **flags)
    assert sorted(p.name for p in folder.iterdir()) == ["mine.h5", "saved_model.pb"]
    assert (folder / "mine.h5").read_bytes() == content
    assert (folder / "saved_model.pb").read_bytes() == b"my own SavedModel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_export_onto_a_file_is_refused(tmp_path: Path, small_registry: BackboneRegistry) -> None:
    (tmp_path / "mnv2").write_bytes(b"x")
    with pytest.raises(ht.ExportError, match=r"is a file; a backbone stand-in is a directory"):
        export_backbone("mobilenet_v2", tmp_path / "mnv2", registry=small_registry)
    assert (tmp_path / "mnv2").read_bytes() == b"x"


@pytest.mark.slow  # starts a process or builds a real architecture
def test_export_into_an_empty_directory(tmp_path: Path, small_registry: BackboneRegistry) -> None:
    (tmp_path / "mnv2").mkdir()
    spec = export_backbone("mobilenet_v2", tmp_path / "mnv2", registry=small_registry)
    assert (Path(spec.handle) / "saved_model.pb").is_file()


@pytest.mark.slow  # starts a process or builds a real architecture
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

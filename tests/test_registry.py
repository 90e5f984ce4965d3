from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import hubtransfer as ht
from hubtransfer.registry import Backbone, BackboneRegistry, suggest_fine_tunable


def test_registry_holds_at_least_twenty_backbones() -> None:
    assert len(ht.list_backbones()) >= 20


@pytest.mark.parametrize(
    ("name", "size", "dim"),
    [
        ("efficientnet_b0", 224, 1280),
        ("efficientnet_b1", 240, 1280),
        ("efficientnet_b2", 260, 1408),
        ("efficientnet_b3", 300, 1536),
    ],
)
def test_report_efficientnets_are_tf1_at_native_size(name: str, size: int, dim: int) -> None:
    b = ht.get_backbone(name)
    index = name[-1]
    assert b.handle == f"https://tfhub.dev/google/efficientnet/b{index}/feature-vector/1"
    assert (b.hub_format, b.fine_tunable, b.image_size, b.feature_dim) == ("tf1", False, size, dim)
    assert b.input_range == (0.0, 1.0)


def test_report_mobilenet_v2_is_tf2_and_fine_tunable() -> None:
    b = ht.get_backbone("mobilenet_v2")
    assert b.handle == "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/4"
    assert (b.hub_format, b.fine_tunable, b.image_size, b.feature_dim) == ("tf2", True, 224, 1280)
    assert b.params == 2_257_984


@pytest.mark.parametrize(
    "name",
    [
        *(f"efficientnet_b{i}_tf2" for i in range(8)),
        "efficientnetv2_b0",
        "efficientnetv2_l",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "resnet50_v2",
        "inception_v3",
        "bit_s_r50x1",
    ],
)
def test_families_are_registered_as_fine_tunable_tf2(name: str) -> None:
    b = ht.get_backbone(name)
    assert b.hub_format == "tf2" and b.fine_tunable and b.is_remote


def test_tf2_efficientnet_handles_point_at_tensorflow_namespace() -> None:
    assert ht.get_backbone("efficientnet_b5_tf2").handle == (
        "https://tfhub.dev/tensorflow/efficientnet/b5/feature-vector/1"
    )
    assert ht.get_backbone("efficientnet_b5_tf2").image_size == 456


def test_list_backbones_filters_by_glob_case_insensitively() -> None:
    names = [b.name for b in ht.list_backbones("MobileNet*")]
    assert names == ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]
    assert ht.list_backbones("nothing*") == []


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(ht.UnknownBackboneError, match=r"Did you mean 'mobilenet_v2'") as info:
        ht.get_backbone("mobilenetv2")
    assert isinstance(info.value, LookupError)
    assert "register_backbone" in str(info.value)


def test_register_refuses_taken_name_unless_overwrite(registry: BackboneRegistry) -> None:
    local = dataclasses.replace(registry.get("mobilenet_v2"), handle="/models/mnv2")
    with pytest.raises(ht.ConfigurationError, match="overwrite=True"):
        registry.register(local)
    registry.register(local, overwrite=True)
    assert registry.get("mobilenet_v2").handle == "/models/mnv2"
    assert ht.get_backbone("mobilenet_v2").is_remote  # the default registry is untouched


def test_register_backbone_adds_to_default_registry() -> None:
    spec = Backbone("test_only_xyz", "/tmp/x", 32, 4, "tf2", True)
    try:
        ht.register_backbone(spec)
        assert ht.get_backbone("test_only_xyz") is spec
    finally:
        ht.registry.default_registry()._backbones.pop("test_only_xyz", None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hub_format": "tf3"}, r"hub_format must be one of \('tf1', 'tf2'\)"),
        ({"image_size": 0}, r"image_size must be a positive integer. Received: image_size=0"),
        ({"feature_dim": 2.5}, r"feature_dim must be a positive integer"),
        ({"input_range": (1.0, 0.0)}, r"low < high"),
        ({"hub_format": "tf1", "fine_tunable": True}, r"Set fine_tunable=False"),
        ({"handle": ""}, r"needs a handle"),
        ({"name": ""}, r"Backbone name must be letters, digits"),
    ],
)
def test_invalid_specs_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ht.ConfigurationError, match=message):
        dataclasses.replace(ht.get_backbone("mobilenet_v2"), **changes)  # type: ignore[arg-type]


def test_register_rejects_non_backbone(registry: BackboneRegistry) -> None:
    with pytest.raises(ht.ConfigurationError, match="takes a hubtransfer.Backbone. Received: dict"):
        registry.register({"name": "x"})  # type: ignore[arg-type]


def test_fine_tunable_suggestion_prefers_same_architecture() -> None:
    assert suggest_fine_tunable(ht.get_backbone("efficientnet_b3")) == "efficientnet_b3_tf2"


def test_backbone_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ht.get_backbone("mobilenet_v2").image_size = 32  # type: ignore[misc]


@pytest.mark.slow  # starts a process or builds a real architecture
def test_import_does_not_load_tensorflow() -> None:
    code = (
        "import sys, hubtransfer; hubtransfer.list_backbones(); print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lazy_attribute_is_stable_across_calls() -> None:
    first = ht.build_classifier
    assert ht.build_classifier is first and callable(ht.build_classifier)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ht.nope  # noqa: B018

from __future__ import annotations

import dataclasses
import hashlib
import urllib.error
from pathlib import Path
from unittest import mock

import pytest

import hubtransfer as ht
from hubtransfer import loading
from hubtransfer.registry import Backbone

REMOTE = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/4"


def test_tf2_layer_loads_frozen_and_trainable(tiny_tf2: Backbone) -> None:
    frozen = loading.load_backbone_layer(tiny_tf2)
    assert not frozen.trainable
    trainable = loading.load_backbone_layer(tiny_tf2, trainable=True)
    assert trainable.trainable and trainable.trainable_weights


def test_tf1_spec_refused_before_any_resolution(tiny_tf1: Backbone) -> None:
    with (
        mock.patch.object(loading.hub, "resolve") as resolve,
        pytest.raises(
            ht.NotFineTunableError, match=r"'tiny_tf1' is a TF1 Hub module .*trainable=False"
        ),
    ):
        loading.load_backbone_layer(dataclasses.replace(tiny_tf1, handle=REMOTE), trainable=True)
    resolve.assert_not_called()


def test_registered_tf1_module_suggests_tf2_alternative() -> None:
    with (
        mock.patch.object(loading.hub, "resolve") as resolve,
        pytest.raises(
            ht.NotFineTunableError,
            match=r"'efficientnet_b0' is a TF1 Hub module.*'efficientnet_b0_tf2'",
        ) as info,
    ):
        ht.build_classifier("efficientnet_b0", 2, trainable=True)
    resolve.assert_not_called()
    assert isinstance(info.value, ValueError)


def test_tf1_directory_detected_even_when_spec_says_tf2(tiny_tf1: Backbone) -> None:
    mislabelled = dataclasses.replace(tiny_tf1, hub_format="tf2", fine_tunable=True)
    with pytest.raises(ht.NotFineTunableError, match=r"holds tfhub_module.pb.*hub_format='tf2'"):
        loading.load_backbone_layer(mislabelled, trainable=True)


def test_raw_tf1_path_refused_via_build_classifier(tiny_tf1_dir: Path) -> None:
    raw = Backbone("raw", str(tiny_tf1_dir), 16, 8, "tf2", True)
    with pytest.raises(ht.NotFineTunableError, match="TF1 Hub module"):
        ht.build_classifier(raw, 2, trainable=True)


def test_frozen_tf1_module_loads(tiny_tf1: Backbone) -> None:
    layer = loading.load_backbone_layer(tiny_tf1)
    assert loading.is_tf1_module(tiny_tf1.handle)
    assert not layer.trainable


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError("[Errno -2] Name or service not known"),
        urllib.error.HTTPError(REMOTE, 403, "Forbidden", {}, None),  # type: ignore[arg-type]
        TimeoutError("timed out"),
    ],
)
def test_fetch_failures_become_backbone_load_error(error: Exception) -> None:
    with (
        mock.patch.object(loading.hub, "resolve", side_effect=error),
        pytest.raises(
            ht.BackboneLoadError,
            match=r"Could not fetch backbone 'mobilenet_v2' from https://tfhub",
        ) as info,
    ):
        ht.build_classifier("mobilenet_v2", 2)
    message = str(info.value)
    assert "TFHUB_CACHE_DIR" in message and "export_backbone" in message
    assert type(error).__name__ in message
    assert isinstance(info.value, OSError)


def test_real_resolver_without_network_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real tensorflow_hub resolver when name resolution fails, as on a machine without
    network. The lookup itself is simulated, so the default run makes no network call."""
    import socket

    def no_dns(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    unreachable = dataclasses.replace(
        ht.get_backbone("mobilenet_v2"), handle="https://tfhub.invalid/google/model/1"
    )
    with pytest.raises(ht.BackboneLoadError, match="https://tfhub.invalid/google/model/1"):
        loading.load_backbone_layer(unreachable, timeout=5)


def test_stale_cache_directory_names_cache_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache entry without saved_model.pb (interrupted download) is reported, not loaded."""
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    stale = tmp_path / hashlib.sha1(REMOTE.encode()).hexdigest()
    stale.mkdir()
    (stale / "variables").mkdir()
    with pytest.raises(ht.BackboneLoadError) as info:
        loading.load_backbone_layer(ht.get_backbone("mobilenet_v2"))
    message = str(info.value)
    assert "contains neither saved_model.pb" in message and str(stale) in message
    assert "delete" in message and "TFHUB_CACHE_DIR" in message and REMOTE in message


def test_missing_local_directory(tmp_path: Path) -> None:
    spec = Backbone("local", str(tmp_path / "absent"), 16, 8, "tf2", True)
    with pytest.raises(ht.BackboneLoadError, match=r"'local' points at .*absent, which is not a"):
        loading.load_backbone_layer(spec)


def test_local_directory_without_saved_model(tmp_path: Path) -> None:
    spec = Backbone("local", str(tmp_path), 16, 8, "tf2", True)
    with pytest.raises(ht.BackboneLoadError, match="neither saved_model.pb nor saved_model.pbtxt"):
        loading.load_backbone_layer(spec)


def test_corrupt_saved_model_is_translated(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"not a protobuf")
    spec = Backbone("corrupt", str(tmp_path), 16, 8, "tf2", True)
    with pytest.raises(ht.BackboneLoadError, match=r"Could not load backbone 'corrupt'"):
        loading.load_backbone_layer(spec)


def test_socket_timeout_is_restored() -> None:
    import socket

    before = socket.getdefaulttimeout()
    with loading._socket_timeout(3.0):
        assert socket.getdefaulttimeout() == 3.0
    assert socket.getdefaulttimeout() == before

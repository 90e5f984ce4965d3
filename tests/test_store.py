"""The feature store: content keys, atomic entries, concurrent writers, cache info/clear.

Top-level imports stay free of TensorFlow: the spawned writer processes import this
module, and should start in a second, not ten.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubtransfer.registry import Backbone
from hubtransfer.store import FeatureStore, feature_key, measurement_key

URL = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/4"
BASE = Backbone("mnv2", URL, 224, 1280, "tf2", True)
FINGERPRINT = "a" * 64


@dataclasses.dataclass(frozen=True)
class _Features:
    """What FeatureStore.put reads of a FeatureSet, without importing TensorFlow."""

    features: np.ndarray
    labels: np.ndarray
    seconds: float = 1.5

    def __len__(self) -> int:
        return len(self.labels)


def _features(n: int = 40, dim: int = 8, seed: int = 0) -> _Features:
    rng = np.random.default_rng(seed)
    return _Features(rng.normal(size=(n, dim)).astype(np.float32), rng.integers(0, 3, n))


def _key(**change: Any) -> str:
    fingerprint = change.pop("fingerprint", FINGERPRINT)
    split = change.pop("split", "train")
    crop = change.pop("crop_fraction", None)
    return feature_key(dataclasses.replace(BASE, **change), fingerprint, split, crop_fraction=crop)


@pytest.mark.parametrize(
    "change",
    [
        {"handle": URL.replace("/4", "/5")},
        {"image_size": 192},
        {"input_range": (-1.0, 1.0)},
        {"hub_format": "tf1", "fine_tunable": False},
        {"crop_fraction": 0.875},
        {"fingerprint": "b" * 64},
        {"split": "validation"},
    ],
)
def test_key_changes_with_every_input(change: dict[str, Any]) -> None:
    assert _key(**change) != _key()


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"name": "renamed"},  # the registry name is not what the features depend on
        {"feature_dim": 1280, "params": 1, "family": "x", "gflops": 0.3, "reference": "y"},
    ],
)
def test_key_stays_equal_otherwise(change: dict[str, Any]) -> None:
    key = _key(**change)
    assert key == _key() and len(key) == 64 and int(key, 16) >= 0


def test_key_of_a_local_model_follows_its_files(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "variables.index").write_bytes(b"index")
    local = dataclasses.replace(BASE, handle=str(model))
    first = feature_key(local, FINGERPRINT, "train")
    assert feature_key(local, FINGERPRINT, "train") == first
    info = (model / "variables" / "variables.index").stat()
    os.utime(
        model / "variables" / "variables.index", ns=(info.st_atime_ns, info.st_mtime_ns + 10**9)
    )
    assert feature_key(local, FINGERPRINT, "train") != first  # re-exported in place


def test_store_lives_in_the_cache_dir_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBTRANSFER_CACHE_DIR", str(tmp_path / "cache"))
    assert FeatureStore().directory == tmp_path / "cache" / "features"
    monkeypatch.delenv("HUBTRANSFER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert FeatureStore().root == tmp_path / "xdg" / "hubtransfer"


def test_put_then_get_in_memory_or_mapped(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    stored = _features()
    key = _key()
    assert store.get(key, memory_limit_bytes=1 << 20) is None
    assert store.put(key, stored, metadata={"backbone": "mnv2", "split": "train"})  # type: ignore[arg-type]
    memory = store.get(key, memory_limit_bytes=1 << 20)
    mapped = store.get(key, memory_limit_bytes=0)
    assert memory is not None and mapped is not None
    assert memory.from_store and memory.path is None and isinstance(memory.features, np.ndarray)
    assert mapped.from_store and mapped.path == tmp_path / "features" / key / "features.npy"
    for got in (memory, mapped):
        np.testing.assert_array_equal(np.asarray(got.features), stored.features)
        np.testing.assert_array_equal(got.labels, stored.labels)
    (entry,) = store.entries()
    assert entry.key == key and entry.metadata["images"] == 40
    assert entry.metadata["backbone"] == "mnv2" and entry.metadata["extraction_seconds"] == 1.5
    assert [p.name for p in tmp_path.joinpath("features").iterdir()] == [key]  # no leftovers


def test_unreadable_entry_is_discarded_and_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FeatureStore(tmp_path)
    key = _key()
    store.put(key, _features(), metadata={})  # type: ignore[arg-type]
    npy = tmp_path / "features" / key / "features.npy"
    npy.write_bytes(npy.read_bytes()[:100])  # damaged behind hubtransfer's back
    assert store.get(key, memory_limit_bytes=1 << 20) is None
    assert "is unreadable" in caplog.text and not (tmp_path / "features" / key).exists()
    assert store.put(key, _features(), metadata={})  # type: ignore[arg-type]
    assert store.get(key, memory_limit_bytes=1 << 20) is not None


def _fill(root: str, key: str, barrier: Any, rounds: int, index: int) -> bool:
    store = FeatureStore(root)
    features = _features(n=4000, dim=256)  # 4 MB: the writes overlap
    ok = True
    for round_ in range(rounds):
        barrier.wait()  # both start writing the same key at once
        ok = store.put(key, features, metadata={"pid": os.getpid()}) and ok  # type: ignore[arg-type]
        barrier.wait()
        if index == 0 and round_ < rounds - 1:
            store.clear()  # so that the next round races for a missing entry again
        barrier.wait()
    return ok


@pytest.mark.slow  # starts a process or builds a real architecture
def test_two_processes_filling_one_key_both_succeed_and_one_entry_wins(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    key = _key()
    with context.Manager() as manager:
        barrier = manager.Barrier(2)
        with context.Pool(2) as pool:
            results = pool.starmap(_fill, [(str(tmp_path), key, barrier, 3, i) for i in (0, 1)])
    assert results == [True, True]
    store = FeatureStore(tmp_path)
    assert [e.key for e in store.entries()] == [key]
    got = store.get(key, memory_limit_bytes=1 << 30)
    assert got is not None
    expected = _features(n=4000, dim=256)
    np.testing.assert_array_equal(got.features, expected.features)
    np.testing.assert_array_equal(got.labels, expected.labels)
    leftovers = [p.name for p in (tmp_path / "features").iterdir() if p.name != key]
    assert leftovers == []  # no staging directory, no torn file


def test_clear_removes_only_store_entries(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    for split in ("train", "validation"):
        store.put(_key(split=split), _features(), metadata={})  # type: ignore[arg-type]
    mine = tmp_path / "notes.txt"
    mine.write_text("keep me")
    foreign = tmp_path / "features" / ("f" * 64)  # named like an entry, but not one
    foreign.mkdir()
    (foreign / "data.bin").write_bytes(b"keep")
    (tmp_path / "features" / "README").write_text("keep")
    assert len(store.entries()) == 2
    removed, freed = store.clear()
    assert removed == 2 and freed > 2 * 40 * 8 * 4
    assert store.entries() == []
    assert mine.read_text() == "keep me" and (foreign / "data.bin").read_bytes() == b"keep"
    assert (tmp_path / "features" / "README").exists()


def test_measurements_are_kept_by_architecture_and_junk_is_ignored(tmp_path: Path) -> None:
    spec = Backbone("m", str(tmp_path / "model"), 16, 8, "tf2", True)
    key = measurement_key(spec, {"head": [], "num_classes": 2})
    assert key != measurement_key(spec, {"head": [128], "num_classes": 2})
    assert key != measurement_key(spec, {"head": [], "num_classes": 3})
    assert key != measurement_key(
        dataclasses.replace(spec, name="n"), {"head": [], "num_classes": 2}
    )
    # A downloaded model's saved configuration names its directory in the Hub cache.
    remote = dataclasses.replace(spec, handle=URL)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub_a"))
        in_a = measurement_key(remote, {"head": []})
        assert measurement_key(spec, {"head": []}) == measurement_key(spec, {"head": []})
        env.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub_b"))
        assert measurement_key(remote, {"head": []}) != in_a
    store = FeatureStore(tmp_path)
    assert store.get_measurement(key) is None
    size = {"model_bytes": 1234, "params_total": 99, "params_trainable": 9}
    store.put_measurement(key, size)
    assert store.get_measurement(key) == size
    path = tmp_path / "measurements" / f"{key}.json"
    for junk in ("{", "[]", '{"key": "other", "model_bytes": 1}', json.dumps({"key": key})):
        path.write_text(junk)
        assert store.get_measurement(key) is None  # measured again, never a wrong size
    store.put_measurement(key, size)
    mine = tmp_path / "measurements" / "notes.json"
    mine.write_text("keep")
    store.clear()
    assert store.get_measurement(key) is None and mine.read_text() == "keep"


def test_cli_cache_info_and_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hubtransfer.cli import main

    monkeypatch.setenv("HUBTRANSFER_CACHE_DIR", str(tmp_path))
    FeatureStore().put(_key(), _features(), metadata={"backbone": "mnv2", "split": "train"})  # type: ignore[arg-type]
    (tmp_path / "other.txt").write_text("not ours")
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"Feature store: {tmp_path / 'features'}" in out and "Entries: 1," in out
    assert "mnv2  train  40 images x 8" in out
    assert main(["cache", "clear"]) == 0
    assert "Removed 1 feature store entry" in capsys.readouterr().out
    assert main(["cache", "info"]) == 0
    assert "Entries: 0, 0.0 MB" in capsys.readouterr().out
    assert (tmp_path / "other.txt").read_text() == "not ours"


def test_killed_writers_leftovers_go_after_an_hour_and_nothing_else(tmp_path: Path) -> None:
    from hubtransfer.imagestore import ImageStore

    key = "a" * 64
    for directory in (tmp_path / "features", tmp_path / "images"):
        directory.mkdir()
        old = directory / f".{key}-staging-{'0' * 16}"  # a writer killed two hours ago
        young = directory / f".{key}-staging-{'1' * 16}"  # one that may still be writing
        mine = directory / f".{key}-notes"  # named almost like one, not hubtransfer's
        for path in (old, young, mine):
            path.mkdir()
            (path / "pixels.u8").write_bytes(b"x")
        two_hours_ago = time.time() - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))
    FeatureStore(tmp_path).clear()
    ImageStore(tmp_path).clear()
    for directory in (tmp_path / "features", tmp_path / "images"):
        assert sorted(p.name for p in directory.iterdir()) == [
            f".{key}-notes",
            f".{key}-staging-{'1' * 16}",
        ]

"""benchmark(tensorboard_dir=...): a TensorBoard run per trial and seed, read back."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import hubtransfer as ht
from hubtransfer.board import TrialBoard
from hubtransfer.registry import Backbone
from images import write_colour_folder


def _read(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run), size_guidance={"tensors": 0})
    events.Reload()
    return events


def _steps(run: Path, tag: str) -> list[int]:
    return [event.step for event in _read(run).Tensors(tag)]


def _value(run: Path, tag: str) -> float:
    [event] = _read(run).Tensors(tag)
    return float(tf.make_ndarray(event.tensor_proto))


def test_tensorboard_runs_per_trial_and_seed(tmp_path: Path, tiny_tf2: Backbone) -> None:
    write_colour_folder(tmp_path / "data", per_class=6, size=(20, 20))
    data = ht.load_image_folder(tmp_path / "data", validation_fraction=0.34)
    board = tmp_path / "tb"
    report = ht.benchmark(
        tiny_tf2,
        data,
        epochs=2,
        warmup_epochs=1,
        fine_tune="both",
        seeds=2,
        measure_latency=False,
        tensorboard_dir=board,
    )
    runs = sorted(p.name for p in board.iterdir() if p.is_dir())
    assert runs == [
        "tiny_tf2_fine_tuned_seed0",
        "tiny_tf2_fine_tuned_seed1",
        "tiny_tf2_frozen_seed0",
        "tiny_tf2_frozen_seed1",
    ]
    for mode, steps in (("frozen", [1, 2]), ("fine_tuned", [1, 2, 3])):  # warm-up, then 2
        result = report.get("tiny_tf2", mode)  # type: ignore[arg-type]
        for seed_run in result.per_seed:
            run = board / f"tiny_tf2_{mode}_seed{seed_run.seed}"
            for split in ("train", "validation"):
                for tag in ("epoch_loss", "epoch_accuracy"):
                    assert _steps(run / split, tag) == steps, (run, split, tag)
            events = _read(run)
            content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
            start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
            assert start.hparams["backbone"].string_value == "tiny_tf2"
            assert start.hparams["mode"].string_value == mode
            assert start.hparams["seed"].number_value == seed_run.seed
            assert start.hparams["epochs"].number_value == 2
            assert _value(run, "final/val_accuracy") == pytest.approx(seed_run.val_accuracy)
            assert _value(run, "final/selected_epoch") == seed_run.selected_epoch
    root = _read(board)
    assert "_hparams_/experiment" in root.Tags()["tensors"]


def test_a_run_directory_that_exists_is_never_written_into(tmp_path: Path) -> None:
    (tmp_path / "tiny_frozen_seed0").mkdir()
    (tmp_path / "tiny_frozen_seed0-2").mkdir()
    board = TrialBoard(tmp_path, "tiny", "frozen")
    board.begin_seed(0)
    assert board.runs[0] == tmp_path / "tiny_frozen_seed0-3"
    assert not any((tmp_path / "tiny_frozen_seed0").iterdir())


def test_tensorboard_dir_is_checked_before_anything_runs(
    tmp_path: Path, tiny_tf2: Backbone
) -> None:
    write_colour_folder(tmp_path / "data", per_class=4, size=(20, 20))
    data = ht.load_image_folder(tmp_path / "data", validation_fraction=0.5)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    out = tmp_path / "out"
    with pytest.raises(
        ht.OutputDirectoryError, match=r"tensorboard_dir \(--tensorboard\) .* is a file"
    ):
        ht.benchmark(tiny_tf2, data, tensorboard_dir=a_file, output_dir=out)
    with (
        mock.patch("hubtransfer.board.importlib.import_module", side_effect=ImportError("no")),
        pytest.raises(ht.MissingDependencyError, match=r"pip install 'hubtransfer\[tensorboard\]'"),
    ):
        ht.benchmark(tiny_tf2, data, tensorboard_dir=tmp_path / "tb", output_dir=out)
    assert not out.exists() and not (tmp_path / "tb").exists()

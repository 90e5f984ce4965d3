from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

import hubtransfer as ht
from conftest import save_tiny_tf2
from hubtransfer.cli import main
from images import write_colour_folder

EXAMPLE = Path(__file__).parents[1] / "examples" / "cats_vs_dogs.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubtransfer.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # starts a process or builds a real architecture
def test_help_lists_commands_without_importing_tensorflow() -> None:
    # --help stays fast because it never imports TensorFlow; the module check is what can
    # fail here (a wall-clock bound would fail on a loaded machine instead).
    code = (
        "import sys; from hubtransfer.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tf_keras', 'tensorflow_hub', 'keras')), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for command in ("backbones", "benchmark", "export", "report", "demo"):
        assert command in proc.stdout
    assert proc.stderr.strip() == "[]"


def test_backbones_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones", "--pattern", "efficientnet_b?"]) == 0
    table = capsys.readouterr().out
    assert "efficientnet_b0" in table and "tf1" in table and "efficientnet_b0_tf2" not in table
    assert main(["backbones", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == len(ht.list_backbones())
    assert {"name", "hub_format", "fine_tunable", "image_size", "feature_dim", "params"} <= set(
        records[0]
    )


@pytest.mark.slow  # starts a process or builds a real architecture
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["benchmark", "--backbones", "mobilenetv2", "--dataset", "x"],
            "Did you mean 'mobilenet_v2'",
        ),
        (
            ["benchmark", "--backbones", "mobilenet_v2", "--dataset", "/no/such/dir"],
            "does not exist",
        ),
        (["export", "/no/model.h5", "--out", "x.tflite", "--tflite"], "does not exist"),
    ],
)
def test_errors_are_one_line_without_traceback(args: list[str], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    # TensorFlow's own start-up lines (CUDA probing) may precede; ours is one line.
    ours = [line for line in proc.stderr.splitlines() if line.startswith("hubtransfer:")]
    assert len(ours) == 1 and ours[0].startswith("hubtransfer: error: ")


@pytest.mark.slow  # starts a process or builds a real architecture
def test_debug_shows_traceback() -> None:
    proc = _run("--debug", "benchmark", "--backbones", "nope", "--dataset", "x")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_benchmark_command_writes_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_colour_folder(tmp_path / "data", per_class=10, size=(40, 48))
    registry = ht.registry.default_registry()
    spec = ht.Backbone("cli_tiny", str(save_tiny_tf2(tmp_path / "m", 32)), 32, 8, "tf2", True)
    args = [
        "benchmark",
        "--backbones",
        "cli_tiny",
        "--dataset",
        str(tmp_path / "data"),
        "--epochs",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--both",
        "--report-head",
    ]
    registry.register(spec)
    try:
        status = main(args)
    finally:
        registry._backbones.pop("cli_tiny")
    assert status == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "| cli_tiny | frozen | ok |" in out and "| cli_tiny | fine_tuned | ok |" in out
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"results.jsonl", "results.json", "results.csv", "results.md", "study.png"} <= names
    # Progress: one line per trial start and end, plain, on stderr; no Keras bars.
    lines = captured.err.splitlines()
    assert "Trial 1/2: cli_tiny / frozen, seed 0: starting" in lines
    assert "Trial 2/2: cli_tiny / fine_tuned, seed 0: starting" in lines
    ends = [line for line in lines if line.startswith("Trial ") and ": ok in " in line]
    assert len(ends) == 2 and "about" in ends[0] and " left" in ends[0], ends
    assert "(kept epoch " in ends[0] and ends[1].endswith("study done")
    assert "Epoch 1/2" not in captured.out + captured.err
    registry.register(spec)
    try:  # --quiet: the same study, resumed (its "kept" lines are progress too)
        status = main([*args, "--quiet"])
    finally:
        registry._backbones.pop("cli_tiny")
    assert status == 0
    quiet = capsys.readouterr()
    assert "| cli_tiny | frozen | ok |" in quiet.out and "Trial" not in quiet.err


def test_benchmark_without_latency_then_with_it(tmp_path: Path) -> None:
    # --no-latency: nothing times the classifier (a study served from the store then
    # loads no backbone); a kept result stays as it is, --no-resume measures it.
    write_colour_folder(tmp_path / "data", per_class=8, size=(40, 48))
    registry = ht.registry.default_registry()
    spec = ht.Backbone("cli_lat", str(save_tiny_tf2(tmp_path / "m", 32)), 32, 8, "tf2", True)
    args = ["benchmark", "--backbones", "cli_lat", "--dataset", str(tmp_path / "data")]
    args += ["--epochs", "1", "--out", str(tmp_path / "out"), "--quiet"]

    def latencies() -> list[object]:
        results = json.loads((tmp_path / "out" / "results.json").read_text())
        return [r["latency_ms"] for r in results]

    registry.register(spec)
    try:
        assert main([*args, "--no-latency"]) == 0
        assert latencies() == [None]
        assert main([*args, "--no-latency"]) == 0  # kept as it is
        assert latencies() == [None]
        assert main(args) == 0  # kept: a finished result is not run again for latency
        assert latencies() == [None]
        assert main([*args, "--no-resume"]) == 0
    finally:
        registry._backbones.pop("cli_lat")
    (latency,) = latencies()
    assert isinstance(latency, float) and latency > 0


def test_export_command(tmp_path: Path) -> None:
    spec = ht.Backbone("t", str(save_tiny_tf2(tmp_path / "m", 32)), 32, 8, "tf2", True)
    # A hidden layer big enough (8 x 2048 weights) that TFLite quantizes it.
    model = ht.build_classifier(spec, 2, hidden_units=(2048,))
    model.save(tmp_path / "model.h5")
    assert (
        main(
            [
                "export",
                str(tmp_path / "model.h5"),
                "--out",
                str(tmp_path / "m.tflite"),
                "--tflite",
                "--quantization",
                "dynamic",
            ]
        )
        == 0
    )
    dynamic = tmp_path / "m.tflite"
    assert (
        main(
            ["export", str(tmp_path / "model.h5"), "--out", str(tmp_path / "f.tflite"), "--tflite"]
        )
        == 0
    )
    # Dynamic-range quantization stores the 8 x 2048 kernel as int8: 3 bytes saved a weight
    # (at least half of that is asserted: the file has other, unquantized parts).
    saved = (tmp_path / "f.tflite").stat().st_size - dynamic.stat().st_size
    assert saved >= 0.5 * 3 * 8 * 2048
    assert (
        main(
            [
                "export",
                str(tmp_path / "model.h5"),
                "--out",
                str(tmp_path / "x.tflite"),
                "--tflite",
                "--quantization",
                "int8",
            ]
        )
        == 2
    )


@pytest.mark.slow  # starts a process or builds a real architecture
def test_example_runs_on_mock_data(tmp_path: Path) -> None:
    """examples/cats_vs_dogs.py, offline stand-ins at 32 px, one epoch, mock TFDS."""
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("cats_vs_dogs", EXAMPLE)
    assert module_spec and module_spec.loader
    example = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(example)
    with tfds.testing.mock_data(num_examples=16):
        report = example.main(
            [
                "--epochs",
                "1",
                "--backbones",
                "mobilenet_v2,efficientnet_b0",
                "--offline-dir",
                str(tmp_path / "models"),
                "--image-size",
                "32",
                "--out",
                str(tmp_path / "out"),
            ]
        )
    keys = [(r.backbone, r.mode, r.status) for r in report.results]
    assert keys == [
        ("mobilenet_v2", "frozen", "ok"),
        ("efficientnet_b0", "frozen", "ok"),
        ("mobilenet_v2", "fine_tuned", "ok"),
    ]
    assert report.get("mobilenet_v2").image_size == 32
    assert (tmp_path / "out" / "results.md").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "epochs must be a positive integer. Received: epochs=0."),
        (["--learning-rate", "0"], "learning_rate must be a finite number > 0"),
        (["--seeds", "0"], "seeds must be a positive integer"),
        (["--export", "int4"], "export must be a sequence of TFLite modes"),
        (["--validation-fraction", "1.5"], "must be a number in [0, 1), e.g. 0.2"),
    ],
)
def test_benchmark_checks_values_before_exporting_backbones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    offline = tmp_path / "standins"
    code = main(
        [
            "benchmark",
            "--backbones",
            "mobilenet_v2",
            "--dataset",
            str(tmp_path),
            "--offline-dir",
            str(offline),
            "--out",
            str(tmp_path / "out"),
            *args,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not offline.exists() and not (tmp_path / "out").exists()  # no work was done


def test_cli_bad_paths_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x89HDF not really")
    cases = [
        (
            ["export", str(garbage), "--out", str(tmp_path / "m.tflite"), "--tflite"],
            "Could not read",
            "--save-models",
        ),
        (
            [
                "benchmark",
                "--backbones",
                "mobilenet_v2",
                "--dataset",
                str(tmp_path),
                "--offline-dir",
                str(a_file),
            ],
            "--offline-dir",
            "is a file",
        ),
        (
            [
                "benchmark",
                "--backbones",
                "mobilenet_v2",
                "--dataset",
                str(tmp_path),
                "--out",
                str(a_file),
            ],
            "--out",
            "is a file",
        ),
        (
            ["report", str(tmp_path), "--max-size-mb", "-1"],
            "--max-size-mb must be a finite number > 0",
            "Received: --max-size-mb=-1.0",
        ),
    ]
    for args, *expected in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("hubtransfer: error: ") and err.count("\n") == 1, err
        for text in expected:
            assert text in err, (args, err)


def test_report_plot_prints_where_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hubtransfer.records import BenchmarkResult, SeedRun

    ht.BenchmarkReport(
        [
            BenchmarkResult(
                "a",
                "frozen",
                "ok",
                best_val_accuracy=0.9,
                final_val_accuracy=0.9,
                train_seconds=1.0,
                model_bytes=10,
                per_seed=(SeedRun(0, 0.9, 0.9, 1.0),),
            )
        ]
    ).save(tmp_path / "study")
    for target, written in [
        (tmp_path / "plots", tmp_path / "plots" / "study.png"),
        (tmp_path / "named", tmp_path / "named.png"),
    ]:
        if target.name == "plots":
            target.mkdir()
        assert main(["report", str(tmp_path / "study"), "--plot", str(target)]) == 0
        assert f"Plot: {written}\n" in capsys.readouterr().out
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cache_info_and_clear_cover_the_image_store(
    tmp_path: Path, _private_cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("cats", "dogs"):
        write_colour_folder(tmp_path / name, per_class=3)
        ht.load_image_folder(tmp_path / name)
    images = _private_cache_dir / "images"
    (images / "mine.txt").write_text("not ours")
    (_private_cache_dir / "features").mkdir()
    (_private_cache_dir / "features" / "mine.txt").write_text("not ours either")
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"Feature store: {_private_cache_dir / 'features'}" in out
    assert f"Image store: {images}" in out and "Entries: 2," in out
    for name in ("cats", "dogs"):
        assert f"  {tmp_path / name}  6 images  " in out
    keys = sorted(p.name for p in images.iterdir() if p.is_dir())
    assert all(key[:12] in out for key in keys) and len(keys) == 2
    assert main(["cache", "clear"]) == 0
    out = capsys.readouterr().out
    assert "Removed 0 feature store entries" in out
    assert "Removed 2 image store entries" in out and str(images) in out
    assert [p.name for p in images.iterdir()] == ["mine.txt"]
    assert (_private_cache_dir / "features" / "mine.txt").exists()
    assert main(["cache", "info"]) == 0
    assert "Entries: 0, 0.0 MB" in capsys.readouterr().out.split("Image store:")[1]

"""From a study to a deployed model and its predictions: export --best, predict, the journey."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hubtransfer as ht
from conftest import save_tiny_tf2
from hubtransfer.cli import main
from images import write_colour_folder

CLASSES = ("blue", "red")  # folder order: sorted


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved frozen study of a tiny 16 px backbone, run through the CLI.

    The backbone is registered only while the study runs, so export and predict rebuild
    it from the study's record, as they must for a local stand-in.
    """
    root = tmp_path_factory.mktemp("deploy")
    write_colour_folder(root / "data", per_class=10, size=(40, 48))
    registry = ht.registry.default_registry()
    registry.register(
        ht.Backbone("deploy_tiny", str(save_tiny_tf2(root / "tiny", 16)), 16, 8, "tf2", True)
    )
    try:
        status = main(
            [
                "--quiet",
                "benchmark",
                "--backbones",
                "deploy_tiny",
                "--dataset",
                str(root / "data"),
                "--epochs",
                "20",
                "--learning-rate",
                "0.05",
                "--test-fraction",
                "0.2",
                "--out",
                str(root / "study"),
                "--save-models",
                "--tensorboard",
                str(root / "tb"),
            ]
        )
    finally:
        registry._backbones.pop("deploy_tiny")
    assert status == 0
    return root


@pytest.fixture(scope="module")
def exported(study: Path) -> Path:
    out = study / "deploy"
    assert (
        main(
            [
                "export",
                str(study / "study"),
                "--best",
                "--tflite",
                "--saved-model",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_export_best_writes_both_formats_with_labels_and_says_why(
    study: Path, exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = exported / "again"
    assert (
        main(
            [
                "export",
                str(study / "study"),
                "--best",
                "--tflite",
                "float16",
                "--out",
                str(out / "m.tflite"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert (
        f"Picked deploy_tiny (frozen): {study / 'study' / 'models' / 'deploy_tiny_frozen.h5'}"
        in text
    )
    assert "Why: Use deploy_tiny (frozen): the highest test accuracy" in text
    assert f"Wrote {out / 'm.tflite'}: " in text and "float16; labels: " in text
    assert f"Agreement with the Keras model: 100.0% of 20 images from {study / 'data'}" in text
    assert (out / "m.labels.txt").read_text() == "blue\nred\n"
    assert json.loads((out / "m.backbone.json").read_text())["image_size"] == 16
    assert (exported / "model.labels.txt").read_text() == "blue\nred\n"
    assert (exported / "saved_model" / "labels.txt").read_text() == "blue\nred\n"
    assert (exported / "model.tflite").stat().st_size > 0


def _copy_study(study: Path, target: Path, *, models: bool, source: str | None = None) -> Path:
    target.mkdir()
    lines = []
    for line in (study / "study" / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if source is not None:
            record["config"]["data"]["source"] = source
        lines.append(json.dumps(record))
    (target / "results.jsonl").write_text("\n".join(lines) + "\n")
    if models:
        shutil.copytree(study / "study" / "models", target / "models")
    return target


def test_export_best_errors_name_the_fix(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unsaved = _copy_study(study, tmp_path / "unsaved", models=False)
    taken = tmp_path / "taken.tflite"
    taken.with_suffix(".labels.txt").write_text("mine\n")
    good = str(study / "study")
    cases = [
        (
            [str(unsaved), "--tflite"],
            ["deploy_tiny_frozen.h5 does not exist", "run without --save-models", "Rerun the same"],
        ),
        (
            [good, "--tflite", "--max-size-mb", "0.000001"],
            ["No result fits the budget", "size <= 1e-06 MB", "Relax the budget"],
        ),
        ([good], ["export --best needs a format", "--saved-model"]),
        ([good, "--tflite", "--backbone", "x"], ["drop --backbone and --class-names"]),
        ([str(tmp_path), "--tflite"], ["No saved study in", "output_dir of a benchmark"]),
        ([good, "--tflite", "int8", "--quantization", "dynamic"], ["disagree", "--tflite int8"]),
        ([good, "--tflite", "--max-latency-ms", "0"], ["--max-latency-ms must be a finite number"]),
    ]
    for args, expected in cases:
        out = str(taken) if "--out" not in args else None
        assert main(["export", *args, "--best", "--out", str(out or tmp_path / "x")]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("hubtransfer: error: ") and err.count("\n") == 1, err
        for text in expected:
            assert text in err, (args, err)
    assert main(["export", good, "--best", "--tflite", "--out", str(taken)]) == 2
    assert "taken.labels.txt already exists" in capsys.readouterr().err
    assert taken.with_suffix(".labels.txt").read_text() == "mine\n" and not taken.exists()
    single = str(study / "study" / "models" / "deploy_tiny_frozen.h5")
    assert (
        main(
            [
                "export",
                single,
                "--out",
                str(tmp_path / "s.tflite"),
                "--max-size-mb",
                "1",
                "--tflite",
            ]
        )
        == 2
    )
    assert "is a budget for --best" in capsys.readouterr().err
    assert main(["export", single, "--out", str(tmp_path / "s.tflite")]) == 2
    assert "needs exactly one of --tflite [MODE] or --saved-model" in capsys.readouterr().err


def test_export_best_without_the_study_folder(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = _copy_study(study, tmp_path / "moved", models=True, source=str(tmp_path / "gone"))
    assert (
        main(["export", str(moved), "--best", "--tflite", "--out", str(tmp_path / "a.tflite")]) == 0
    )
    out = capsys.readouterr().out
    assert (
        f"not measured (the study's image folder {tmp_path / 'gone'} is no longer readable" in out
    )
    args = ["export", str(moved), "--best", "--tflite", "int8", "--out", str(tmp_path / "q.tflite")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--tflite int8 needs calibration images" in err and "--calibration-data" in err
    assert main([*args, "--calibration-data", str(study / "data")]) == 0
    assert "int8; labels:" in capsys.readouterr().out
    assert (tmp_path / "q.labels.txt").read_text() == "blue\nred\n"


def _images(study: Path) -> list[str]:
    return sorted(str(p) for p in (study / "data").rglob("img_*"))


def test_h5_saved_model_and_tflite_predictions_agree(study: Path, exported: Path) -> None:
    images = _images(study)
    h5 = ht.predict(study / "study" / "models" / "deploy_tiny_frozen.h5", study / "data")
    serving = ht.predict(exported / "saved_model", images)
    tflite = ht.predict(exported / "model.tflite", images, top_k=1)
    assert [p.path for p in h5] == images and all(p.ok for p in h5 + serving + tflite)
    for a, b, c in zip(h5, serving, tflite, strict=True):
        assert [x.name for x in a.top] == [x.name for x in b.top]
        assert len(a.top) == 2 and len(c.top) == 1 and a.label == c.label
        np.testing.assert_allclose(
            [x.probability for x in a.top], [x.probability for x in b.top], atol=1e-4
        )
        assert abs(a.top[0].probability - c.top[0].probability) < 1e-4
        assert abs(sum(x.probability for x in a.top) - 1.0) < 1e-6


def test_binary_probabilities_come_from_the_sigmoid(study: Path) -> None:
    model_path = study / "study" / "models" / "deploy_tiny_frozen.h5"
    model = ht.artifacts.load_classifier(model_path)  # type: ignore[attr-defined]
    image = _images(study)[0]
    spec = ht.Backbone("deploy_tiny", str(study / "tiny"), 16, 8, "tf2", True)
    [prediction] = ht.predict(model, image, backbone=spec, labels=list(CLASSES))
    from hubtransfer.decoding import decode_image
    from hubtransfer.preprocessing import preprocess_image

    logit = float(model(preprocess_image(decode_image(image), spec)[None])[0, 0])
    probabilities = {c.name: c.probability for c in prediction.top}
    assert probabilities["red"] == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-6)


def test_multiclass_probabilities_come_from_the_softmax(tmp_path: Path, study: Path) -> None:
    spec = ht.Backbone("t3", str(study / "tiny"), 16, 8, "tf2", True)
    model = ht.build_classifier(spec, 3)
    image = _images(study)[0]
    [p] = ht.predict(model, [image], backbone=spec, labels=["a", "b", "c"], top_k=5)
    from hubtransfer.decoding import decode_image
    from hubtransfer.preprocessing import preprocess_image

    logits = np.asarray(model(preprocess_image(decode_image(image), spec)[None]))[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert len(p.top) == 3
    for c in p.top:
        assert c.probability == pytest.approx(expected["abc".index(c.name)], abs=1e-6)
    assert [c.probability for c in p.top] == sorted((c.probability for c in p.top), reverse=True)


def test_unreadable_images_are_reported_not_fatal(
    study: Path, exported: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed" / "deeper"
    folder.mkdir(parents=True)
    shutil.copy(_images(study)[0], folder / "ok.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.jpg").write_bytes(b"")
    items = [tmp_path / "mixed", tmp_path / "nope.jpg", str(tmp_path / "*.png")]
    results = ht.predict(exported / "saved_model", items)
    by_name = {Path(p.path).name: p for p in results}
    assert set(by_name) == {"ok.jpg", "broken.jpg", "notes.txt", "nope.jpg", "*.png"}
    assert by_name["ok.jpg"].ok and by_name["ok.jpg"].label in CLASSES
    assert by_name["broken.jpg"].error == "truncated"
    assert by_name["notes.txt"].error == "not an image"
    assert by_name["nope.jpg"].error == "missing file"
    assert by_name["*.png"].error == "no file matches this pattern"
    assert by_name["broken.jpg"].top == () and by_name["broken.jpg"].label is None


def test_predict_errors_name_the_fix(study: Path, exported: Path, tmp_path: Path) -> None:
    image = _images(study)[0]
    loose = tmp_path / "loose.h5"
    shutil.copy(study / "study" / "models" / "deploy_tiny_frozen.h5", loose)
    bare = tmp_path / "bare.tflite"
    shutil.copy(exported / "model.tflite", bare)
    spec = ht.Backbone("deploy_tiny", str(study / "tiny"), 16, 8, "tf2", True)
    wrong_size = ht.Backbone("big", str(study / "tiny"), 32, 8, "tf2", True)
    cases = [
        (loose, {}, "needs its backbone to resize and scale images"),
        (loose, {"backbone": spec}, "needs class names: none were given and it is not in a study"),
        (bare, {"backbone": spec}, "neither bare.labels.txt nor labels.txt is beside it"),
        (bare, {}, "backbone='mobilenet_v2' (CLI: --backbone NAME)"),
        (exported / "saved_model", {"labels": ["a", "b", "c"]}, "predicts 2 classes but 3 label"),
        (
            loose,
            {"backbone": wrong_size, "labels": CLASSES},
            "takes 16x16 images but backbone 'big'",
        ),
        (exported / "saved_model", {"top_k": 0}, "top_k must be a positive integer"),
        (tmp_path, {}, "a directory without saved_model.pb"),
        (study / "tiny", {}, "without hubtransfer's serving signature"),
        (tmp_path / "model.onnx", {}, "Allowed: a classifier .h5"),
        (tmp_path / "gone.tflite", {}, "does not exist"),
    ]
    for model, kwargs, message in cases:
        with pytest.raises(ht.HubTransferError, match=None) as caught:
            ht.predict(model, image, **kwargs)  # type: ignore[arg-type]
        assert message in str(caught.value), (model, kwargs, str(caught.value))


def test_predict_command_formats_and_exit_status(
    study: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _images(study)[0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n cut")
    model = str(exported / "model.tflite")
    assert main(["predict", model, image, str(broken)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"{image}: ") and lines[1] == f"{broken}: unreadable: truncated"
    assert "1 of 2 file(s) could not be read" in captured.err
    assert main(["predict", model, image, str(broken), "--csv", "--top-k", "1"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["path"], r["rank"], r["error"]) for r in rows] == [
        (image, "1", ""),
        (str(broken), "", "truncated"),
    ]
    assert rows[0]["class"] in CLASSES and 0.5 <= float(rows[0]["probability"]) <= 1.0
    assert main(["predict", model, image, "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["path"] == image and record["error"] is None
    assert [c["name"] for c in record["top"]] in (["blue", "red"], ["red", "blue"])
    assert main(["predict", model, str(broken), str(tmp_path / "none.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hubtransfer: error: No image could be predicted")
    assert "broken.png: truncated" in err[0] and "none.jpg: missing file" in err[0]


def test_cli_journey_benchmark_report_export_predict(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's journey on the study the fixture ran: report, export --best, predict."""
    assert (study / "tb" / "deploy_tiny_frozen_seed0" / "validation").is_dir()
    assert main(["report", str(study / "study"), "--recommend", "--max-size-mb", "50"]) == 0
    assert "Use deploy_tiny (frozen): the highest test accuracy" in capsys.readouterr().out
    model = tmp_path / "deploy" / "model.tflite"
    assert (
        main(
            [
                "export",
                str(study / "study"),
                "--best",
                "--max-size-mb",
                "50",
                "--tflite",
                "dynamic",
                "--out",
                str(model),
            ]
        )
        == 0
    )
    assert "Picked deploy_tiny (frozen)" in capsys.readouterr().out
    assert main(["predict", str(model), str(study / "data"), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 20 and all(r["error"] is None for r in records)
    # Greyscale files carry no colour, so no model can tell their class: score the others.
    coloured = [r for r in records if Image.open(r["path"]).mode not in ("L", "LA")]
    assert len(coloured) >= 14
    right = [Path(r["path"]).parent.name == r["top"][0]["name"] for r in coloured]
    assert np.mean(right) >= 0.9, [(r["path"], r["top"][0]["name"]) for r in coloured]

"""The ``hubtransfer`` command: a thin layer over the library.

Nothing heavy is imported at module level, so ``hubtransfer --help`` answers without
loading TensorFlow. Library errors print one line and exit with status 2; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hubtransfer._version import __version__
from hubtransfer.config import DEFAULTS
from hubtransfer.errors import ConfigurationError, HubTransferError
from hubtransfer.settings import TFLITE_MODES
from hubtransfer.validation import check_fraction, check_int, check_optional_positive_number

if TYPE_CHECKING:
    from hubtransfer.tflite import Quantization

__all__ = ["main"]

_QUIET_HELP = "no progress lines (trial i of N, time left), only warnings and errors"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubtransfer",
        description="Compare TF Hub backbones for transfer learning on your images, "
        "and export the result.",
    )
    parser.add_argument("--version", action="version", version=f"hubtransfer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help=_QUIET_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backbones", help="list the registered backbones")
    p.add_argument("--pattern", help="glob on the name, e.g. 'efficientnet*'")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table")

    p = sub.add_parser("benchmark", help="train and compare backbones on a dataset")
    p.add_argument("--backbones", required=True, help="comma-separated names, e.g. a,b,c")
    p.add_argument(
        "--dataset", required=True, help="tfds:NAME (e.g. tfds:cats_vs_dogs) or an image folder"
    )
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fine-tune", action="store_true", help="fine-tune instead of frozen")
    mode.add_argument("--both", action="store_true", help="frozen and fine-tuned")
    p.add_argument(
        "--report-head", action="store_true", help="the report's head: Dense(128) + Dropout(0.5)"
    )
    p.add_argument("--augment", action="store_true", help="random resized crop + flip")
    p.add_argument("--no-cache", action="store_true", help="run the backbone every epoch")
    p.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time each classifier's inference (default: on); --no-latency skips it, so a "
        "study served from the feature store need not load its backbones",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("hubtransfer-results"),
        help="results directory (JSON, CSV, Markdown, PNG)",
    )
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep finished results in --out (default: on)",
    )
    p.add_argument(
        "--offline-dir", type=Path, help="use untrained local stand-ins exported there (offline)"
    )
    p.add_argument("--data-dir", type=Path, help="TFDS data_dir")
    p.add_argument("--download", action="store_true", help="let TFDS download the dataset")
    p.add_argument("--validation-fraction", type=float, default=DEFAULTS.validation_fraction)
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="hold out this share of each class as a test split (image folders)",
    )
    p.add_argument("--test-split", help="TFDS split expression of a held-out test split")
    p.add_argument(
        "--monitor",
        choices=("val_loss", "val_accuracy"),
        default="val_loss",
        help="what picks the epoch whose model is kept (default: val_loss)",
    )
    p.add_argument("--patience", type=int, help="stop a run after N epochs without improvement")
    p.add_argument(
        "--class-weight",
        choices=("balanced",),
        help="weight classes inverse to their frequency (imbalanced data)",
    )
    p.add_argument("--export", default="", help="TFLite modes to measure: dynamic,float16,int8")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--seeds", type=int, default=1, help="repeat each run with N seeds")
    fan = p.add_mutually_exclusive_group()
    fan.add_argument(
        "--workers",
        type=int,
        help="run trials in N local processes (each gets its share of the cores)",
    )
    fan.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run trials on a Dask cluster, e.g. tcp://10.0.0.5:8786 "
        "(pip install 'hubtransfer[dask]'; workers need the data and models "
        "at the same paths)",
    )
    p.add_argument(
        "--save-models",
        action="store_true",
        help="save each classifier to --out/models/*.h5 (for export)",
    )
    p.add_argument("--verbose", action="store_true", help="Keras progress bars")
    p.add_argument(
        "--tensorboard",
        type=Path,
        metavar="DIR",
        help="write a TensorBoard run per trial there (scalars per epoch, "
        "hyperparameters and final metrics for the HParams view)",
    )

    p = sub.add_parser("report", help="table, Pareto front and recommendation of a saved study")
    p.add_argument("dir", type=Path, help="the --out / output_dir of a benchmark")
    p.add_argument("--recommend", action="store_true", help="recommend within a budget")
    p.add_argument("--max-size-mb", type=float)
    p.add_argument("--max-latency-ms", type=float)
    p.add_argument("--max-train-seconds", type=float)
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="compare two results: backbone or backbone/mode",
    )
    p.add_argument("--plot", type=Path, help="also write the plot to this PNG")
    p.add_argument(
        "--per-class",
        action="store_true",
        help="per-class precision, recall, F1 and confusion matrices",
    )

    p = sub.add_parser(
        "export",
        help="export a saved classifier (.h5), or a study's best, to TFLite or serving",
        description="Export MODEL.h5, or with --best the model `report --recommend` picks in a "
        "study folder (run with --save-models), to TFLite and/or a serving SavedModel.",
    )
    p.add_argument(
        "model",
        type=Path,
        metavar="MODEL_OR_STUDY",
        help="a classifier saved as .h5 or .keras; with --best, a study folder",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output .tflite file or SavedModel directory (with --best and both "
        "--tflite and --saved-model: a directory for both)",
    )
    p.add_argument(
        "--tflite",
        nargs="?",
        const="float32",
        choices=TFLITE_MODES,
        metavar="MODE",
        help="write a .tflite file; MODE: float32 (default), dynamic, float16, int8",
    )
    p.add_argument("--saved-model", action="store_true", help="write a serving SavedModel")
    p.add_argument(
        "--quantization", choices=("dynamic", "float16", "int8"), help="same as --tflite MODE"
    )
    p.add_argument(
        "--best",
        action="store_true",
        help="export the study's recommended model (within --max-size-mb, "
        "--max-latency-ms), with a labels file, and measure its agreement",
    )
    p.add_argument("--max-size-mb", type=float, help="with --best: size budget")
    p.add_argument("--max-latency-ms", type=float, help="with --best: latency budget")
    p.add_argument(
        "--agreement-images",
        type=int,
        default=100,
        help="with --best: images compared with the Keras model (default: 100)",
    )
    p.add_argument("--backbone", help="backbone the model was built on (int8, serving)")
    p.add_argument("--calibration-data", type=Path, help="image folder for int8 calibration")
    p.add_argument("--class-names", help="comma-separated, for --saved-model")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier hubtransfer export at --out"
    )

    p = sub.add_parser(
        "predict",
        help="top classes of images with a saved or exported model",
        description="Print the top-k classes and probabilities of each image. Images are "
        "decoded as in training (Pillow, EXIF orientation applied). Unreadable files are "
        "reported with the reason and skipped; the exit status is 0 when any image was "
        "predicted, 2 when none was.",
    )
    p.add_argument(
        "model",
        type=Path,
        help="a classifier .h5 (its backbone from --backbone, or from the study record when "
        "it sits in a study's models/ folder), a serving SavedModel directory (export "
        "--saved-model), or a .tflite (labels from NAME.labels.txt or labels.txt beside it, "
        "or --labels; backbone from NAME.backbone.json beside it, or --backbone)",
    )
    p.add_argument("images", nargs="+", help="image files, folders (recursive) or globs")
    p.add_argument("--backbone", help="backbone the model was built on (resize and scale)")
    p.add_argument("--labels", type=Path, help="labels file: one class per line, in order")
    p.add_argument("--top-k", type=int, default=3, help="classes per image (default: 3)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV: path,rank,class,probability,error")
    fmt.add_argument("--json", action="store_true", help="JSON: one record per image")

    p = sub.add_parser(
        "cache",
        help="the feature store and the image store: where they are, what they hold; clear them",
    )
    p.add_argument(
        "action",
        choices=("info", "clear"),
        help="info: locations, entries, sizes; clear: delete hubtransfer's entries of both",
    )

    p = sub.add_parser("demo", help="the report's study offline, on generated images")
    p.add_argument("--out", type=Path, default=Path("hubtransfer-demo"))
    p.add_argument("--quick", action="store_true", help="two backbones, fewer images (~2 min)")
    for command in sub.choices.values():
        # SUPPRESS: a subcommand's default must not undo a --quiet given before it.
        command.add_argument(
            "--quiet", action="store_true", default=argparse.SUPPRESS, help=_QUIET_HELP
        )
    return parser


def _backbones(args: argparse.Namespace) -> list[Any]:
    import hubtransfer as ht

    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    specs = [ht.get_backbone(n) for n in names]  # unknown names fail before any work
    if args.offline_dir is None:
        return specs
    return [ht.offline.export_backbone(s.name, args.offline_dir / s.name) for s in specs]


def _dataset(args: argparse.Namespace) -> Any:
    import hubtransfer as ht

    if args.dataset.startswith("tfds:"):
        return ht.load_tfds(
            args.dataset[5:],
            data_dir=args.data_dir,
            download=args.download,
            test_split=args.test_split,
        )
    return ht.load_image_folder(
        args.dataset,
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )


def _cmd_backbones(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from hubtransfer.registry import backbones_markdown, list_backbones

    backbones = list_backbones(args.pattern)
    if args.markdown:
        print(backbones_markdown(backbones), end="")
        return 0
    if args.json:
        print(json.dumps([asdict(b) for b in backbones], indent=2))
        return 0
    rows = [("name", "format", "fine-tunable", "size", "features", "params")]
    rows += [
        (
            b.name,
            b.hub_format,
            "yes" if b.fine_tunable else "no",
            str(b.image_size),
            str(b.feature_dim),
            f"{b.params:,}" if b.params else "-",
        )
        for b in backbones
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not backbones:
        print(f"(no backbone matches {args.pattern!r})")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    import hubtransfer as ht
    from hubtransfer._fs import check_writable_dir
    from hubtransfer.settings import FineTune, make_settings, modes_of

    # Every value is checked before a backbone is exported or a dataset is read.
    exports = tuple(m.strip() for m in args.export.split(",") if m.strip())
    fine_tune: FineTune = "both" if args.both else bool(args.fine_tune)
    head = ht.REPORT_HEAD if args.report_head else None
    make_settings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        head=head,
        augment=args.augment,
        cache_features=not args.no_cache,
        seed=args.seed,
        seeds=args.seeds,
        export=exports,
        monitor=args.monitor,
        patience=args.patience,
        class_weight=args.class_weight,
    )
    modes_of(fine_tune)
    check_fraction("validation_fraction (--validation-fraction)", args.validation_fraction)
    check_fraction("test_fraction (--test-fraction)", args.test_fraction)
    check_writable_dir(args.out, "--out")
    if args.offline_dir is not None:
        check_writable_dir(args.offline_dir, "--offline-dir")
    if args.tensorboard is not None:
        from hubtransfer.board import check_tensorboard_dir

        check_tensorboard_dir(args.tensorboard)
    if args.workers is not None:
        check_int("--workers", args.workers)
    if (args.workers is not None or args.scheduler) and args.tensorboard is not None:
        raise ConfigurationError(
            "--tensorboard is written in-process only; drop --workers/--scheduler or --tensorboard."
        )
    with contextlib.ExitStack() as stack:
        executor = _executor(args, stack)
        specs = _backbones(args)
        data = _dataset(args)
        report = _run_benchmark(args, specs, data, fine_tune, head, exports, executor)
    print(report.to_markdown())
    _plot(report, args.out / "study.png")
    print(f"Results: {args.out}/results.json, results.csv, results.md")
    if args.save_models:
        print(f"Models: {args.out}/models/")
    if args.tensorboard is not None:
        print(f"TensorBoard: tensorboard --logdir {args.tensorboard}")
    return 0


def _executor(args: argparse.Namespace, stack: contextlib.ExitStack) -> Any:
    """None (in-process), N local processes, or a Dask cluster's executor."""
    from hubtransfer.fanout import dask_executor, local_executor

    if args.workers is not None:
        return stack.enter_context(local_executor(args.workers))
    if args.scheduler is not None:
        client, executor = dask_executor(args.scheduler)
        stack.callback(client.close)
        return executor
    return None


def _run_benchmark(
    args: argparse.Namespace,
    specs: Any,
    data: Any,
    fine_tune: Any,
    head: Any,
    exports: tuple[str, ...],
    executor: Any,
) -> Any:
    import hubtransfer as ht

    return ht.benchmark(
        specs,
        data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        fine_tune=fine_tune,
        head=head,
        augment=args.augment,
        cache_features=not args.no_cache,
        measure_latency=args.latency,
        output_dir=args.out,
        resume=args.resume,
        seed=args.seed,
        seeds=args.seeds,
        verbose=1 if args.verbose else 0,
        export=exports,
        save_models=args.save_models,
        monitor=args.monitor,
        patience=args.patience,
        class_weight=args.class_weight,
        tensorboard_dir=args.tensorboard,
        executor=executor,
    )


def _plot(report: Any, path: Path) -> None:
    from hubtransfer.errors import MissingDependencyError

    try:
        print(f"Plot: {report.plot(path)}")
    except MissingDependencyError as exc:
        print(f"No plot: {exc}")


def _quantization(args: argparse.Namespace) -> str | None:
    """The TFLite quantization of ``--tflite MODE`` / ``--quantization`` (None: float32)."""
    mode: str | None = args.tflite if args.tflite not in (None, "float32") else None
    given: str | None = args.quantization
    if mode and given and mode != given:
        raise ConfigurationError(
            f"--tflite {mode} and --quantization {given} disagree. Give the mode once, e.g. "
            "--tflite int8."
        )
    return mode or given


def _cmd_export(args: argparse.Namespace) -> int:
    import hubtransfer as ht
    from hubtransfer.artifacts import load_classifier

    if args.best:
        return _cmd_export_best(args)
    if bool(args.tflite) == bool(args.saved_model):
        raise ConfigurationError(
            "export MODEL.h5 needs exactly one of --tflite [MODE] or --saved-model. Received: "
            f"{'both' if args.tflite else 'neither'}. Export twice for both formats."
        )
    for flag in ("max_size_mb", "max_latency_ms"):
        if getattr(args, flag) is not None:
            raise ConfigurationError(
                f"--{flag.replace('_', '-')} is a budget for --best. Received it without "
                "--best; pass a study folder with --best, or drop the budget."
            )
    quantization = _quantization(args)
    model = load_classifier(args.model)
    if args.saved_model:
        if not (args.backbone and args.class_names):
            raise ConfigurationError(
                "--saved-model needs --backbone NAME and --class-names a,b,... to build the "
                "serving signature."
            )
        names = [c.strip() for c in args.class_names.split(",")]
        path = ht.export_saved_model(
            model, args.out, backbone=args.backbone, class_names=names, overwrite=args.overwrite
        )
    else:
        calibration = None
        if quantization == "int8":
            if not (args.calibration_data and args.backbone):
                raise ConfigurationError(
                    "--quantization int8 needs --calibration-data FOLDER (a few hundred training "
                    "images, one subfolder per class) and --backbone NAME; or use "
                    "--quantization dynamic, which needs no data."
                )
            calibration = ht.load_image_folder(args.calibration_data, validation_fraction=0.0)
        path = ht.export_tflite(
            model,
            args.out,
            quantization=cast("Quantization | None", quantization),
            representative_data=calibration,
            backbone=args.backbone,
            overwrite=args.overwrite,
        )
    print(f"Wrote {path}")
    return 0


def _size(path: Path) -> str:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    return f"{total / 1e6:.2f} MB ({total:,} bytes)"


def _cmd_export_best(args: argparse.Namespace) -> int:
    import dataclasses

    import hubtransfer as ht
    from hubtransfer._fs import atomic_write_text
    from hubtransfer.artifacts import (
        agreement_data,
        backbone_of,
        best_model,
        check_class_names,
        load_classifier,
        serving_agreement,
    )
    from hubtransfer.validation import check_int

    for name in ("max_size_mb", "max_latency_ms"):
        check_optional_positive_number(f"--{name.replace('_', '-')}", getattr(args, name))
    check_int("--agreement-images", args.agreement_images)
    if not (args.tflite or args.saved_model or args.quantization):
        raise ConfigurationError(
            "export --best needs a format: --tflite [float32|dynamic|float16|int8] and/or "
            "--saved-model. Received neither."
        )
    if args.backbone or args.class_names:
        raise ConfigurationError(
            "export --best takes the backbone and class names from the study's record; drop "
            "--backbone and --class-names (they are for exporting a single MODEL.h5)."
        )
    quantization = _quantization(args)
    want_tflite = bool(args.tflite or args.quantization)
    advice, picked = best_model(
        args.model, max_model_mb=args.max_size_mb, max_latency_ms=args.max_latency_ms
    )
    result = picked.result
    print(f"Picked {result.label}: {picked.path}")
    print(f"Why: {advice.reason}")
    model = load_classifier(picked.path)
    spec = backbone_of(result, feature_dim=int(model.get_layer("head").input_shape[-1]))
    check_class_names(model, picked.class_names, f"The record of {result.label}")
    labels_text = "\n".join(picked.class_names) + "\n"
    both = want_tflite and args.saved_model
    tflite_path = args.out / "model.tflite" if both else args.out
    serving_path = args.out / "saved_model" if both else args.out
    labels_path = tflite_path.with_suffix(".labels.txt")
    spec_path = tflite_path.with_suffix(".backbone.json")
    if want_tflite and not args.overwrite:
        for taken in (labels_path, spec_path):
            if taken.exists():
                raise ConfigurationError(
                    f"{taken} already exists and was left untouched. Pass --overwrite to "
                    "replace it, or choose another --out."
                )
    sample, source = agreement_data(result, picked.class_names, args.calibration_data)
    if want_tflite:
        calibration = None
        if quantization == "int8":
            if sample is None:
                raise ConfigurationError(
                    f"--tflite int8 needs calibration images, and {source}. Or use --tflite "
                    "dynamic, which needs none."
                )
            calibration = sample
        path = ht.export_tflite(
            model,
            tflite_path,
            quantization=cast("Quantization | None", quantization),
            representative_data=calibration,
            backbone=spec,
            overwrite=args.overwrite,
        )
        atomic_write_text(labels_path, labels_text)
        backbone = {**dataclasses.asdict(spec), "class_names": list(picked.class_names)}
        atomic_write_text(spec_path, json.dumps(backbone, indent=2) + "\n")
        print(f"Wrote {path}: {_size(path)}, {quantization or 'float32'}; labels: {labels_path}")
        if sample is None:
            print(f"Agreement with the Keras model: not measured ({source}).")
        else:
            scored = ht.evaluate_tflite(
                path,
                sample,
                backbone=spec,
                model=model,
                split="train",
                max_examples=args.agreement_images,
            )
            print(
                f"Agreement with the Keras model: {scored.agreement:.1%} of {scored.examples} "
                f"images from {source}; {scored.ms_per_image:.2f} ms/image in the interpreter."
            )
    if args.saved_model:
        path = ht.export_saved_model(
            model,
            serving_path,
            backbone=spec,
            class_names=picked.class_names,
            overwrite=args.overwrite,
        )
        print(f"Wrote {path}: {_size(path)}, serving SavedModel; labels: {path / 'labels.txt'}")
        if sample is None:
            print(f"Agreement with the Keras model: not measured ({source}).")
        else:
            agreement, seen = serving_agreement(path, model, sample, spec, args.agreement_images)
            print(
                f"Agreement with the Keras model: {agreement:.1%} of {seen} images from {source}."
            )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from hubtransfer.results import BenchmarkReport

    for name in ("max_size_mb", "max_latency_ms", "max_train_seconds"):
        check_optional_positive_number(f"--{name.replace('_', '-')}", getattr(args, name))
    report = BenchmarkReport.load(args.dir)
    print(report.to_markdown(per_class=args.per_class))
    front = report.pareto()
    print(
        "Pareto front (accuracy, train time, size): "
        + (", ".join(r.label for r in front) or "none")
    )
    if args.compare:
        print(report.compare(*args.compare).text)
    if args.recommend:
        advice = report.recommend(
            max_model_mb=args.max_size_mb,
            max_latency_ms=args.max_latency_ms,
            max_train_seconds=args.max_train_seconds,
        )
        print(advice.reason)
    if args.plot:
        _plot(report, args.plot)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import csv
    import dataclasses

    from hubtransfer.errors import DatasetError
    from hubtransfer.prediction import predict

    predictions = predict(
        args.model, args.images, backbone=args.backbone, labels=args.labels, top_k=args.top_k
    )
    if args.json:
        print(json.dumps([dataclasses.asdict(p) for p in predictions], indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["path", "rank", "class", "probability", "error"])
        for p in predictions:
            if p.error is not None:
                writer.writerow([p.path, "", "", "", p.error])
            for rank, c in enumerate(p.top, start=1):
                writer.writerow([p.path, rank, c.name, f"{c.probability:.6f}", ""])
    else:
        for p in predictions:
            shown = ", ".join(f"{c.name} {c.probability:.3f}" for c in p.top)
            print(f"{p.path}: {shown if p.ok else 'unreadable: ' + str(p.error)}")
    failed = [p for p in predictions if not p.ok]
    if len(failed) == len(predictions):
        listed = "; ".join(f"{p.path}: {p.error}" for p in failed[:3])
        raise DatasetError(
            f"No image could be predicted: {len(failed)} file(s), none readable ({listed}"
            f"{'; ...' if len(failed) > 3 else ''}). Pass image files (JPEG, PNG, BMP, GIF, "
            "WebP), folders of them, or globs such as 'photos/*.jpg'."
        )
    if failed:
        print(
            f"hubtransfer: {len(failed)} of {len(predictions)} file(s) could not be read "
            "and were skipped (reasons above).",
            file=sys.stderr,
        )
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from hubtransfer.imagestore import ImageStore
    from hubtransfer.store import FeatureStore

    store = FeatureStore()
    images = ImageStore()
    if args.action == "clear":
        for what, directory, (removed, freed) in (
            ("feature store", store.directory, store.clear()),
            ("image store", images.directory, images.clear()),
        ):
            noun = "entry" if removed == 1 else "entries"
            print(
                f"Removed {removed} {what} {noun} ({freed / 1e6:.1f} MB) from {directory}; "
                "nothing else there was touched."
            )
        return 0
    entries = store.entries()
    print(f"Feature store: {store.directory} (set HUBTRANSFER_CACHE_DIR to move it)")
    print(f"Entries: {len(entries)}, {sum(e.bytes for e in entries) / 1e6:.1f} MB")
    for e in entries:
        m = e.metadata
        print(
            f"  {m.get('backbone', '?')}  {m.get('split', '?')}  {m.get('images', '?')} images x "
            f"{m.get('feature_dim', '?')}  {e.bytes / 1e6:.1f} MB  {m.get('created', '')}  "
            f"{e.key[:12]}"
        )
    folders = images.entries()
    print(
        f"Image store: {images.directory} (decoded image folders; least recently used go "
        f"past {images.max_bytes / 2**30:.1f} GiB)"
    )
    print(f"Entries: {len(folders)}, {sum(e.bytes for e in folders) / 1e6:.1f} MB")
    for folder in folders:
        m = folder.metadata
        print(
            f"  {m.get('root', '?')}  {m.get('images', '?')} images  "
            f"{folder.bytes / 1e6:.1f} MB  {m.get('created', '')}  {folder.key[:12]}"
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from hubtransfer.demo import DISCLAIMER, FULL, QUICK, run_demo

    start = time.perf_counter()
    print(f"hubtransfer demo{' --quick' if args.quick else ''}: the report's study, offline.")
    print(DISCLAIMER)
    print()
    report = run_demo(args.out, QUICK if args.quick else FULL, say=print)
    print()
    print(report.to_markdown())
    print(DISCLAIMER)
    print(f"Results: {args.out}/results.json, results.csv, results.md; plot: {args.out}/study.png")
    print(f"Finished in {time.perf_counter() - start:.0f} s.")
    return 0


_COMMANDS = {
    "backbones": _cmd_backbones,
    "benchmark": _cmd_benchmark,
    "export": _cmd_export,
    "report": _cmd_report,
    "predict": _cmd_predict,
    "demo": _cmd_demo,
    "cache": _cmd_cache,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hubtransfer`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    with _progress(args.debug, args.quiet):
        return _run(args)


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


@contextlib.contextmanager
def _progress(debug: bool, quiet: bool) -> Iterator[None]:
    """hubtransfer's INFO lines (progress) as plain lines on stderr; WARNING with --quiet.

    With --debug everything goes through the root logger with names and levels instead.
    The handler is removed afterwards, so in-process callers (tests) keep their logging.
    """
    logger = logging.getLogger("hubtransfer")
    if debug:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PlainFormatter())
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _run(args: argparse.Namespace) -> int:
    try:
        return _COMMANDS[args.command](args)
    except HubTransferError as exc:
        if args.debug:
            raise
        print(f"hubtransfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hubtransfer: interrupted (finished results are kept in --out)", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"hubtransfer: unexpected {type(exc).__name__}: {exc} (rerun with --debug for "
            "the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

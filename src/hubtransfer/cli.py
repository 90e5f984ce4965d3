"""The ``hubtransfer`` command: a thin layer over the library.

Nothing heavy is imported at module level, so ``hubtransfer --help`` answers without
loading TensorFlow. Library errors print one line and exit with status 2; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hubtransfer._version import __version__
from hubtransfer.config import DEFAULTS
from hubtransfer.errors import ConfigurationError, ExportError, HubTransferError
from hubtransfer.validation import check_fraction, check_optional_positive_number

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubtransfer",
        description="Compare TF Hub backbones for transfer learning on your images, "
        "and export the result.",
    )
    parser.add_argument("--version", action="version", version=f"hubtransfer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
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
    p.add_argument("--report-head", action="store_true",
                   help="the report's head: Dense(128) + Dropout(0.5)")  # fmt: skip
    p.add_argument("--augment", action="store_true", help="random resized crop + flip")
    p.add_argument("--no-cache", action="store_true", help="run the backbone every epoch")
    p.add_argument("--out", type=Path, default=Path("hubtransfer-results"),
                   help="results directory (JSON, CSV, Markdown, PNG)")  # fmt: skip
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="keep finished results in --out (default: on)")  # fmt: skip
    p.add_argument(
        "--offline-dir", type=Path, help="use untrained local stand-ins exported there (offline)"
    )
    p.add_argument("--data-dir", type=Path, help="TFDS data_dir")
    p.add_argument("--download", action="store_true", help="let TFDS download the dataset")
    p.add_argument("--validation-fraction", type=float, default=DEFAULTS.validation_fraction)
    p.add_argument("--test-fraction", type=float, default=0.0,
                   help="hold out this share of each class as a test split (image folders)")
    p.add_argument("--test-split", help="TFDS split expression of a held-out test split")
    p.add_argument("--monitor", choices=("val_loss", "val_accuracy"), default="val_loss",
                   help="what picks the epoch whose model is kept (default: val_loss)")
    p.add_argument("--patience", type=int,
                   help="stop a run after N epochs without improvement")
    p.add_argument("--class-weight", choices=("balanced",),
                   help="weight classes inverse to their frequency (imbalanced data)")
    p.add_argument("--export", default="", help="TFLite modes to measure: dynamic,float16,int8")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--seeds", type=int, default=1, help="repeat each run with N seeds")
    p.add_argument("--save-models", action="store_true",
                   help="save each classifier to --out/models/*.h5 (for export)")  # fmt: skip
    p.add_argument("--verbose", action="store_true", help="Keras progress bars")

    p = sub.add_parser("report", help="table, Pareto front and recommendation of a saved study")
    p.add_argument("dir", type=Path, help="the --out / output_dir of a benchmark")
    p.add_argument("--recommend", action="store_true", help="recommend within a budget")
    p.add_argument("--max-size-mb", type=float)
    p.add_argument("--max-latency-ms", type=float)
    p.add_argument("--max-train-seconds", type=float)
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="compare two results: backbone or backbone/mode")  # fmt: skip
    p.add_argument("--plot", type=Path, help="also write the plot to this PNG")
    p.add_argument("--per-class", action="store_true",
                   help="per-class precision, recall, F1 and confusion matrices")

    p = sub.add_parser("export", help="export a saved classifier (.h5) to TFLite or serving")
    p.add_argument("model", type=Path, help="a classifier saved as .h5 or .keras")
    p.add_argument("--out", type=Path, required=True, help="output .tflite file or directory")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--tflite", action="store_true", help="write a .tflite file")
    kind.add_argument("--saved-model", action="store_true", help="write a serving SavedModel")
    p.add_argument("--quantization", choices=("dynamic", "float16", "int8"))
    p.add_argument("--backbone", help="backbone the model was built on (int8, serving)")
    p.add_argument("--calibration-data", type=Path, help="image folder for int8 calibration")
    p.add_argument("--class-names", help="comma-separated, for --saved-model")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier hubtransfer export at --out")

    p = sub.add_parser("cache", help="the feature store: where it is, what it holds; clear it")
    p.add_argument(
        "action",
        choices=("info", "clear"),
        help="info: location, entries, size; clear: delete hubtransfer's entries",
    )

    p = sub.add_parser("demo", help="the report's study offline, on generated images")
    p.add_argument("--out", type=Path, default=Path("hubtransfer-demo"))
    p.add_argument("--quick", action="store_true", help="two backbones, fewer images (~2 min)")
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
        return ht.load_tfds(args.dataset[5:], data_dir=args.data_dir, download=args.download,
                            test_split=args.test_split)  # fmt: skip
    return ht.load_image_folder(args.dataset, validation_fraction=args.validation_fraction,
                                test_fraction=args.test_fraction, seed=args.seed)  # fmt: skip


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
        (b.name, b.hub_format, "yes" if b.fine_tunable else "no", str(b.image_size),
         str(b.feature_dim), f"{b.params:,}" if b.params else "-")
        for b in backbones
    ]  # fmt: skip
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
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        head=head, augment=args.augment, cache_features=not args.no_cache, seed=args.seed,
        seeds=args.seeds, export=exports, monitor=args.monitor, patience=args.patience,
        class_weight=args.class_weight,
    )  # fmt: skip
    modes_of(fine_tune)
    check_fraction("validation_fraction (--validation-fraction)", args.validation_fraction)
    check_fraction("test_fraction (--test-fraction)", args.test_fraction)
    check_writable_dir(args.out, "--out")
    if args.offline_dir is not None:
        check_writable_dir(args.offline_dir, "--offline-dir")
    specs = _backbones(args)
    data = _dataset(args)
    report = ht.benchmark(
        specs, data, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, fine_tune=fine_tune, head=head, augment=args.augment,
        cache_features=not args.no_cache, output_dir=args.out, resume=args.resume,
        seed=args.seed, seeds=args.seeds, verbose=1 if args.verbose else 0, export=exports,
        save_models=args.save_models, monitor=args.monitor, patience=args.patience,
        class_weight=args.class_weight,
    )  # fmt: skip
    print(report.to_markdown())
    _plot(report, args.out / "study.png")
    print(f"Results: {args.out}/results.json, results.csv, results.md")
    if args.save_models:
        print(f"Models: {args.out}/models/")
    return 0


def _plot(report: Any, path: Path) -> None:
    from hubtransfer.errors import MissingDependencyError

    try:
        print(f"Plot: {report.plot(path)}")
    except MissingDependencyError as exc:
        print(f"No plot: {exc}")


def _cmd_export(args: argparse.Namespace) -> int:
    import hubtransfer as ht
    from hubtransfer._tf import hub, tf_keras

    if not args.model.exists():
        raise ConfigurationError(
            f"Model file {args.model} does not exist. Pass a classifier saved with "
            "model.save('model.h5') or benchmark(save_models=True)."
        )
    try:
        model = tf_keras.models.load_model(
            args.model, custom_objects={"KerasLayer": hub.KerasLayer}, compile=False
        )
    except Exception as exc:  # h5py, Keras and OS errors for a file that is not a model
        raise ExportError(
            f"Could not read {args.model} as a Keras classifier ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). Pass a model saved "
            "with model.save('model.h5') or by `hubtransfer benchmark --save-models`."
        ) from exc
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
        if args.quantization == "int8":
            if not (args.calibration_data and args.backbone):
                raise ConfigurationError(
                    "--quantization int8 needs --calibration-data FOLDER (a few hundred training "
                    "images, one subfolder per class) and --backbone NAME; or use "
                    "--quantization dynamic, which needs no data."
                )
            calibration = ht.load_image_folder(args.calibration_data, validation_fraction=0.0)
        path = ht.export_tflite(
            model, args.out, quantization=args.quantization,
            representative_data=calibration, backbone=args.backbone, overwrite=args.overwrite,
        )  # fmt: skip
    print(f"Wrote {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from hubtransfer.results import BenchmarkReport

    for name in ("max_size_mb", "max_latency_ms", "max_train_seconds"):
        check_optional_positive_number(f"--{name.replace('_', '-')}", getattr(args, name))
    report = BenchmarkReport.load(args.dir)
    print(report.to_markdown(per_class=args.per_class))
    front = report.pareto()
    print("Pareto front (accuracy, train time, size): "
          + (", ".join(r.label for r in front) or "none"))  # fmt: skip
    if args.compare:
        print(report.compare(*args.compare).text)
    if args.recommend:
        advice = report.recommend(
            max_model_mb=args.max_size_mb, max_latency_ms=args.max_latency_ms,
            max_train_seconds=args.max_train_seconds,
        )  # fmt: skip
        print(advice.reason)
    if args.plot:
        _plot(report, args.plot)
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from hubtransfer.store import FeatureStore

    store = FeatureStore()
    entries = store.entries()
    if args.action == "clear":
        removed, freed = store.clear()
        noun = "entry" if removed == 1 else "entries"
        print(f"Removed {removed} feature store {noun} ({freed / 1e6:.1f} MB) from "
              f"{store.directory}; nothing else there was touched.")  # fmt: skip
        return 0
    print(f"Feature store: {store.directory} (set HUBTRANSFER_CACHE_DIR to move it)")
    print(f"Entries: {len(entries)}, {sum(e.bytes for e in entries) / 1e6:.1f} MB")
    for e in entries:
        m = e.metadata
        print(f"  {m.get('backbone', '?')}  {m.get('split', '?')}  {m.get('images', '?')} images x "
              f"{m.get('feature_dim', '?')}  {e.bytes / 1e6:.1f} MB  {m.get('created', '')}  "
              f"{e.key[:12]}")  # fmt: skip
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
    if not args.debug:
        # Progress of long passes (decoding, feature extraction) and each run's outcome
        # are INFO records of the hubtransfer loggers: shown by default.
        logging.getLogger("hubtransfer").setLevel(logging.INFO)
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
        print(f"hubtransfer: unexpected {type(exc).__name__}: {exc} (rerun with --debug for "
              "the traceback)", file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

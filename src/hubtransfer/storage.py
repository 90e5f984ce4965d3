"""Where results live: the JSON-lines log a study appends to, and the JSON, CSV and
Markdown files of a finished report. Every write is atomic or a single appended line;
every read survives torn and junk lines.

This module does not import TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from hubtransfer._fs import atomic_write_text
from hubtransfer.errors import BenchmarkError
from hubtransfer.records import BenchmarkResult, Mode, Status

__all__ = ["RESULTS_FILE", "append_result", "load_results", "read_results", "save_results"]

logger = logging.getLogger(__name__)

#: The JSON-lines log a study appends to, one finished result per line.
RESULTS_FILE = "results.jsonl"

_CSV_COLUMNS = (
    "backbone",
    "mode",
    "status",
    "best_val_accuracy",
    "final_val_accuracy",
    "train_seconds",
    "feature_seconds",
    "head_seconds",
    "model_bytes",
    "params_total",
    "params_trainable",
    "latency_ms",
    "throughput",
    "image_size",
    "seed",
    "error",
    "selected_epoch",
    "val_accuracy",
    "val_balanced_accuracy",
    "test_accuracy",
    "test_balanced_accuracy",
    "features_from_store",
)


def append_result(path: Path, result: BenchmarkResult) -> None:
    """Appends one result as a JSON line, in one write, flushed to disk.

    A process killed at any point leaves every earlier line intact. A log whose last line
    was torn (killed inside the write, or NUL bytes left by a power loss) is first ended
    with a newline, so the fragment stays a bad line of its own and the new result is
    readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(result.to_dict()) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(data: object) -> BenchmarkResult:
    if not isinstance(data, dict):
        raise ValueError(f"a record is a JSON object, not {type(data).__name__}")
    if not isinstance(data.get("backbone"), str) or data.get("mode") not in get_args(Mode):
        raise ValueError("a record needs a 'backbone' name and a 'mode' (frozen or fine_tuned)")
    if data.get("status") not in get_args(Status):
        raise ValueError(f"status must be one of {get_args(Status)}")
    try:
        return BenchmarkResult.from_dict(data)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ValueError(f"fields do not match a result ({exc})") from exc


def read_results(path: Path) -> list[BenchmarkResult]:
    """Every readable result line in a JSON-lines log, in order.

    Lines that are not results (torn by a kill, NUL bytes, junk, another format) are
    skipped and logged as a warning with their line numbers; they never stop a read.

    Raises:
        BenchmarkError: The log cannot be read at all (permissions, a directory).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BenchmarkError(
            f"Cannot read the results log {path}: {exc.strerror or exc}. Check that it is a "
            "readable file, or point at another study folder."
        ) from exc
    results = []
    bad: list[int] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            results.append(_record(json.loads(line.decode("utf-8"))))
        except (ValueError, UnicodeDecodeError, RecursionError):
            bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        logger.warning(
            "%s: skipped %d line(s) that are not results (line %s): torn by an interrupted "
            "write or edited by hand. Their runs are redone on resume.",
            path,
            len(bad),
            shown,
        )
    return results


def _latest_per_key(results: Sequence[BenchmarkResult]) -> list[BenchmarkResult]:
    latest: dict[tuple[str, str], BenchmarkResult] = {}
    for result in results:
        latest.pop(result.key, None)
        latest[result.key] = result
    return list(latest.values())


def save_results(
    results: Sequence[BenchmarkResult], markdown: str, directory: str | os.PathLike[str]
) -> dict[str, Path]:
    """Writes ``results.json``, ``results.csv`` and ``results.md`` into ``directory``,
    each atomically."""
    records = [r.to_dict() for r in results]
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "results.json",
        "csv": out / "results.csv",
        "markdown": out / "results.md",
    }
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(paths["json"], json.dumps(records, indent=2) + "\n")
    atomic_write_text(paths["markdown"], markdown)
    atomic_write_text(paths["csv"], buffer.getvalue())
    return paths


def load_results(directory: str | os.PathLike[str]) -> list[BenchmarkResult]:
    """Reads a saved study: ``results.jsonl`` (as the study wrote it) or ``results.json``."""
    root = Path(directory)
    if (root / RESULTS_FILE).exists():
        return _latest_per_key(read_results(root / RESULTS_FILE))
    if (root / "results.json").exists():
        path = root / "results.json"
        try:
            records = json.loads(path.read_bytes().decode("utf-8"))
            if not isinstance(records, list):
                raise ValueError(f"a list of records, not {type(records).__name__}")
            return [_record(r) for r in records]
        except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BenchmarkError(
                f"{path} is not a saved hubtransfer study ({exc}). Point at the "
                f"output_dir of a benchmark() run; if {RESULTS_FILE} is there, it is read "
                "first."
            ) from exc
    raise BenchmarkError(
        f"No saved study in {root}: expected {RESULTS_FILE} or results.json. Point at the "
        "output_dir of a benchmark() run."
    )

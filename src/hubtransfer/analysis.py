"""What a study's results say: the ranking metric, comparisons with confidence intervals,
the Pareto front and a recommendation within a budget.

This module does not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hubtransfer.errors import BenchmarkError, ConfigurationError
from hubtransfer.metrics import SplitMetrics
from hubtransfer.records import BenchmarkResult, Comparison, Recommendation
from hubtransfer.stats import Summary, summarize, welch_interval

__all__ = ["compare", "find", "get_result", "pareto", "ranking_metric", "recommend"]


def ranking_metric(results: Sequence[BenchmarkResult]) -> str:
    """The metric a study is ranked by: held-out test over validation, balanced accuracy
    when the classes are imbalanced (largest > 3x smallest), and for results saved before
    the kept-epoch fields existed, the best validation accuracy."""
    ok = [r for r in results if r.status == "ok"]
    imbalanced = any(
        m is not None and SplitMetrics.from_dict(m).is_imbalanced
        for r in ok
        for m in (r.val_metrics, r.test_metrics)
    )
    if ok and all(r.test_accuracy is not None for r in ok):
        return "test_balanced_accuracy" if imbalanced else "test_accuracy"
    if ok and all(r.val_accuracy is not None for r in ok):
        return "val_balanced_accuracy" if imbalanced else "val_accuracy"
    return "best_val_accuracy"


def get_result(
    results: Sequence[BenchmarkResult], backbone: str, mode: str = "frozen"
) -> BenchmarkResult:
    """The result for ``(backbone, mode)``."""
    for result in results:
        if result.key == (backbone, mode):
            return result
    have = ", ".join(f"{b}/{m}" for b, m in (r.key for r in results)) or "none"
    raise BenchmarkError(
        f"No result for backbone {backbone!r} in mode {mode!r}. Results present: {have}."
    )


def find(results: Sequence[BenchmarkResult], which: str | tuple[str, str]) -> BenchmarkResult:
    """The result named ``"backbone"``, ``"backbone/mode"`` or ``(backbone, mode)``."""
    if isinstance(which, tuple):
        return get_result(results, *which)
    backbone, _, mode = which.partition("/")
    if mode:
        return get_result(results, backbone, mode)
    matches = [r for r in results if r.backbone == backbone]
    if len(matches) != 1:
        raise BenchmarkError(
            f"{which!r} names {len(matches)} results; say which mode, e.g. "
            f"'{backbone}/frozen' or ('{backbone}', 'fine_tuned')."
        )
    return matches[0]


def compare(
    results: Sequence[BenchmarkResult],
    a: str | tuple[str, str],
    b: str | tuple[str, str],
    *,
    metric: str | None = None,
    level: float = 0.95,
) -> Comparison:
    """How ``a`` and ``b`` differ in ``metric``, and whether seeds' noise can explain it.

    ``a`` and ``b`` are ``"backbone"``, ``"backbone/mode"`` or ``(backbone, mode)``.
    The interval is Welch's t-interval over the seeds (needs 2+ seeds each).
    ``metric`` defaults to :func:`ranking_metric` (held-out test accuracy when there is
    a test split; balanced accuracy when classes are imbalanced).
    """
    metric = metric or ranking_metric(results)
    ra, rb = find(results, a), find(results, b)
    va, vb = ra.seed_values(metric), rb.seed_values(metric)
    if not va or not vb:
        raise BenchmarkError(
            f"Cannot compare {ra.label} ({ra.status}) and {rb.label} ({rb.status}): "
            f"both need {metric} values. Compare results whose status is 'ok'."
        )
    interval = welch_interval(va, vb, level)
    sa, sb = summarize(va, level), summarize(vb, level)
    what = metric.replace("_", " ")
    pct = f"{level:.0%}"
    head = (
        f"{ra.label} scores {_pm(sa)} and {rb.label} {_pm(sb)} ({what}, mean"
        f"{' ± ' + pct + ' t-interval half-width' if sa.n > 1 or sb.n > 1 else ''} over "
        f"{sa.n} and {sb.n} seed(s))."
    )
    if interval.low is None or interval.high is None:
        text = (
            f"{head} The difference is {interval.difference:+.3f}, but with fewer than two "
            "seeds each it cannot be told from seed noise: rerun with seeds >= 3."
        )
    else:
        verdict = (
            "distinguishable from seed noise"
            if interval.excludes_zero
            else "not distinguishable from seed noise"
        )
        text = (
            f"{head} The difference, {interval.difference:+.3f} ({pct} CI "
            f"{interval.low:+.3f} to {interval.high:+.3f}), is {verdict} at the {pct} level."
        )
    return Comparison(
        ra.label,
        rb.label,
        metric,
        interval.difference,
        interval.low,
        interval.high,
        level,
        interval.excludes_zero,
        text,
    )


def pareto(
    results: Sequence[BenchmarkResult],
    objectives: Sequence[str] = ("accuracy", "train_seconds", "model_bytes"),
) -> list[BenchmarkResult]:
    """The results no other result beats on every objective (the Pareto front).

    Objectives: ``"accuracy"`` (the :func:`ranking_metric`, maximised),
    ``"final_accuracy"`` (maximised), and ``"train_seconds"``, ``"model_bytes"``,
    ``"latency_ms"``, ``"params_total"`` (minimised). Only ``ok`` results with every
    objective measured take part. Equal results do not dominate each other.
    """
    unknown = [o for o in objectives if o not in _OBJECTIVES]
    if unknown or not objectives:
        raise ConfigurationError(
            f"Unknown Pareto objective(s) {unknown}. Allowed: {sorted(_OBJECTIVES)}."
        )
    metric = ranking_metric(results)

    def value(r: BenchmarkResult, objective: str) -> Any:
        if objective == "accuracy":
            return s.mean if (s := r.summary(metric)) else None
        return _OBJECTIVES[objective](r)

    points = [(r, [value(r, o) for o in objectives]) for r in results if r.status == "ok"]
    scored = [(r, vals) for r, vals in points if None not in vals]

    def dominates(p: list[Any], q: list[Any]) -> bool:
        return all(x >= y for x, y in zip(p, q, strict=True)) and any(
            x > y for x, y in zip(p, q, strict=True)
        )

    return [r for r, p in scored if not any(dominates(q, p) for _, q in scored)]


def recommend(
    results: Sequence[BenchmarkResult],
    *,
    max_model_mb: float | None = None,
    max_latency_ms: float | None = None,
    max_train_seconds: float | None = None,
    metric: str | None = None,
) -> Recommendation:
    """The most accurate result that fits the budget, with a one-paragraph reason.

    ``metric`` defaults to :func:`ranking_metric`: held-out test accuracy when the data
    has a test split, balanced accuracy when the classes are imbalanced (a model that
    always answers the majority class cannot win). A budget nothing fits returns
    ``Recommendation(None, reason)``, not an exception.
    """
    metric = metric or ranking_metric(results)
    max_bytes = None if max_model_mb is None else max_model_mb * 1e6
    limits = [
        ("size", "model_bytes", max_bytes, "MB", 1e6),
        ("latency", "latency_ms", max_latency_ms, "ms", 1.0),
        ("train time", "train_seconds", max_train_seconds, "s", 1.0),
    ]
    fits: list[BenchmarkResult] = []
    excluded: list[str] = []
    for r in results:
        if r.status != "ok" or not r.seed_values(metric):
            excluded.append(f"{r.label}: {r.status}")
            continue
        over = []
        for name, attr, limit, unit, scale in limits:
            if limit is None:
                continue
            value = getattr(r, attr)
            if value is None:
                over.append(f"{name} not measured")
            elif value > limit:
                over.append(f"{name} {value / scale:.1f} {unit} > {limit / scale:.1f} {unit}")
        if over:
            excluded.append(f"{r.label}: {', '.join(over)}")
        else:
            fits.append(r)
    budget = (
        ", ".join(
            f"{name} <= {limit / scale:g} {unit}"
            for name, _, limit, unit, scale in limits
            if limit is not None
        )
        or "no budget"
    )
    if not fits:
        return Recommendation(
            None,
            f"No result fits the budget ({budget}). "
            + ("Excluded: " + "; ".join(excluded) + ". " if excluded else "")
            + "Relax the budget, or benchmark smaller backbones (e.g. mobilenet_v3_small).",
            tuple(excluded),
        )
    ranked = sorted(fits, key=lambda r: -summarize(r.seed_values(metric)).mean)
    best = ranked[0]
    what = metric.replace("_", " ")
    reason = [
        f"Use {best.label}: the highest {what} ({_pm(summarize(best.seed_values(metric)))}) "
        f"of the {len(fits)} result(s) within the budget ({budget})."
    ]
    if "balanced" in metric:
        reason.append(
            "The classes are imbalanced (largest more than 3x the smallest), so results are "
            "ranked by balanced accuracy (mean per-class recall), which a model answering "
            "only the majority class cannot win."
        )
    if "val" in metric:
        reason.append(
            "Validation accuracy also picked each run's epoch, so it is optimistic; load "
            "the data with a test split (test_fraction= or test_split=) for an honest score."
        )
    if len(ranked) > 1:
        runner = ranked[1]
        comparison = compare(results, best.key, runner.key, metric=metric)
        noise = (
            "a difference seed noise cannot explain"
            if comparison.distinguishable
            else "a difference within seed noise"
            if comparison.ci_low is not None
            else "untested against seed noise (one seed each)"
        )
        reason.append(
            f"It beat the runner-up, {runner.label}, by {comparison.difference:.3f} ({noise})."
        )
    if best.model_bytes is not None:
        reason.append(
            f"It saves to {best.model_bytes / 1e6:.1f} MB and trained in "
            f"{best.train_seconds or 0:.0f} s."
        )
    if excluded:
        reason.append("Excluded: " + "; ".join(excluded) + ".")
    return Recommendation(best, " ".join(reason), tuple(excluded))


def _pm(summary: Summary) -> str:
    if summary.half_width is None:
        return f"{summary.mean:.3f}"
    return f"{summary.mean:.3f} ± {summary.half_width:.3f}"


_OBJECTIVES: dict[str, Any] = {
    "accuracy": None,  # the ranking metric, computed per report
    "final_accuracy": lambda r: s.mean if (s := r.summary("final_val_accuracy")) else None,
    "train_seconds": lambda r: None if r.train_seconds is None else -r.train_seconds,
    "model_bytes": lambda r: None if r.model_bytes is None else -r.model_bytes,
    "latency_ms": lambda r: None if r.latency_ms is None else -r.latency_ms,
    "params_total": lambda r: None if r.params_total is None else -r.params_total,
}

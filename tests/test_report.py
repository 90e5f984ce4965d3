from __future__ import annotations

import json
from pathlib import Path

import pytest

import hubtransfer as ht
from hubtransfer.cli import main
from hubtransfer.records import BenchmarkResult, SeedRun


def result(
    backbone: str,
    accs: list[float],
    *,
    seconds: float = 10.0,
    mb: float = 10.0,
    latency: float = 5.0,
    mode: str = "frozen",
    status: str = "ok",
) -> BenchmarkResult:
    runs = tuple(SeedRun(i, a, a, seconds / len(accs)) for i, a in enumerate(accs))
    return BenchmarkResult(
        backbone,
        mode,
        status,  # type: ignore[arg-type]
        best_val_accuracy=sum(accs) / len(accs) if accs else None,
        final_val_accuracy=sum(accs) / len(accs) if accs else None,
        train_seconds=seconds,
        model_bytes=int(mb * 1e6),
        latency_ms=latency,
        per_seed=runs,
    )


@pytest.fixture()
def study() -> ht.BenchmarkReport:
    return ht.BenchmarkReport(
        [
            result("small", [0.90, 0.91, 0.89], seconds=10, mb=5, latency=2),
            result("big", [0.95, 0.96, 0.94], seconds=100, mb=50, latency=20),
            result("slow_bad", [0.85, 0.86, 0.84], seconds=200, mb=60, latency=30),  # dominated
            result("mid", [0.93, 0.92, 0.94], seconds=50, mb=20, latency=8),
            result("tf1", [], mode="fine_tuned", status="skipped"),
        ]
    )


def test_pareto_front(study: ht.BenchmarkReport) -> None:
    assert {r.backbone for r in study.pareto()} == {"small", "big", "mid"}
    assert {r.backbone for r in study.pareto(("accuracy",))} == {"big"}
    assert {r.backbone for r in study.pareto(("accuracy", "model_bytes"))} == {
        "small",
        "big",
        "mid",
    }


def test_pareto_ties_single_and_all_dominated_but_one() -> None:
    tie = ht.BenchmarkReport([result("a", [0.9]), result("b", [0.9])])
    assert {r.backbone for r in tie.pareto()} == {"a", "b"}
    assert [r.backbone for r in ht.BenchmarkReport([result("a", [0.9])]).pareto()] == ["a"]
    best = ht.BenchmarkReport(
        [
            result("best", [0.99], seconds=1, mb=1),
            result("x", [0.5], seconds=2, mb=2),
            result("y", [0.6], seconds=3, mb=1),
        ]
    )
    assert [r.backbone for r in best.pareto()] == ["best"]
    with pytest.raises(ht.ConfigurationError, match=r"Unknown Pareto objective\(s\) \['speed'\]"):
        best.pareto(("speed",))


def test_recommend_under_budgets(study: ht.BenchmarkReport) -> None:
    free = study.recommend()
    assert free.result is not None and free.result.backbone == "big"
    assert "runner-up, mid (frozen), by 0.020" in free.reason
    within = study.recommend(max_model_mb=25)
    assert within.result is not None and within.result.backbone == "mid"
    assert "big (frozen): size 50.0 MB > 25.0 MB" in within.reason
    fast = study.recommend(max_latency_ms=5, max_train_seconds=60)
    assert fast.result is not None and fast.result.backbone == "small"
    assert any(e.startswith("tf1 (fine_tuned): skipped") for e in fast.excluded)


def test_budget_nothing_fits_is_an_answer(study: ht.BenchmarkReport) -> None:
    advice = study.recommend(max_model_mb=1)
    assert advice.result is None
    assert advice.reason.startswith("No result fits the budget (size <= 1 MB)")
    assert "small (frozen): size 5.0 MB > 1.0 MB" in advice.reason


def test_compare_in_words(study: ht.BenchmarkReport) -> None:
    c = study.compare("big", "small")
    assert c.distinguishable and c.difference == pytest.approx(0.05)
    assert c.ci_low is not None and 0 < c.ci_low < 0.05 < c.ci_high  # type: ignore[operator]
    assert "distinguishable from seed noise at the 95% level" in c.text
    noisy = ht.BenchmarkReport([result("a", [0.90, 0.93, 0.87]), result("b", [0.91, 0.88, 0.92])])
    close = noisy.compare("a/frozen", ("b", "frozen"))
    assert not close.distinguishable and "not distinguishable" in close.text
    one = ht.BenchmarkReport([result("a", [0.9]), result("b", [0.8])]).compare("a", "b")
    assert one.ci_low is None and "rerun with seeds >= 3" in one.text
    with pytest.raises(ht.BenchmarkError, match="Compare results whose status is 'ok'"):
        study.compare("tf1", "big")


def test_markdown_shows_mean_plus_minus_half_width(study: ht.BenchmarkReport) -> None:
    table = study.to_markdown()
    assert "| small | frozen | ok | 0.900 ± 0.025 |" in table
    assert "mean ± half-width of the 95% t-interval" in table


def test_saved_study_loads_back_and_cli_reports(
    study: ht.BenchmarkReport, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study.save(tmp_path)
    loaded = ht.BenchmarkReport.load(tmp_path)
    assert loaded.results == study.results
    assert {r.backbone for r in loaded.pareto()} == {"small", "big", "mid"}
    assert (
        main(
            [
                "report",
                str(tmp_path),
                "--recommend",
                "--max-size-mb",
                "25",
                "--compare",
                "big",
                "small",
                "--plot",
                str(tmp_path / "p.png"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "Pareto front (accuracy, train time, size): small (frozen), big (frozen), mid (frozen)"
        in out
    )
    assert "Use mid (frozen)" in out and "distinguishable" in out
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_load_rejects_foreign_json(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps([{"nope": 1}]))
    with pytest.raises(ht.BenchmarkError, match="not a saved hubtransfer study"):
        ht.BenchmarkReport.load(tmp_path)

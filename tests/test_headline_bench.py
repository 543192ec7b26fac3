"""bench/headline.py's memory figures: medians over fresh processes, and a memory-only update of an existing JSON.

    pytest tests/test_headline_bench.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_bench

bench = load_bench("headline")


def test_median_peak_takes_the_median_of_every_call() -> None:
    values = iter([226.0, 207.0, 215.0])
    median, runs = bench.median_peak(lambda: next(values), 3)
    assert (median, runs) == (215.0, [226.0, 207.0, 215.0])
    assert bench.median_peak(lambda: 5, 0) == (5.0, [5.0])  # at least one call


def headline_json() -> dict:
    row = {"params_m": 22.7, "texts_per_s": 40.0, "ndcg_at_10": 0.85, "news_test_ndcg_at_10": 0.94,
           "suite_average": 0.62, "sentiment_accuracy": 0.78}
    return {"gap_closed": 0.86, "memory_ratio_vs_teacher": 0.37, "models": {
        "base student (all-MiniLM-L6-v2)": {**row, "peak_memory_mb": 270.0, "peak_memory_mb_batch1": 113.0},
        "distilled student": {**row, "peak_memory_mb": 226.0, "peak_memory_mb_batch1": 120.0},
        "teacher (all-mpnet-base-v2)": {**row, "peak_memory_mb": 617.0, "peak_memory_mb_batch1": 426.0}}}


def test_update_memory_replaces_memory_figures_and_ratios_only() -> None:
    memory = {"base student (all-MiniLM-L6-v2)": {"peak_memory_mb": 260.0, "peak_memory_mb_batch1": 110.0},
              "distilled student": {"peak_memory_mb": 200.0, "peak_memory_mb_batch1": 100.0},
              "teacher (all-mpnet-base-v2)": {"peak_memory_mb": 625.0, "peak_memory_mb_batch1": 400.0}}
    result = bench.update_memory(headline_json(), memory, 32, {"memory_repeats": 3})
    assert result["memory_ratio_vs_teacher"] == pytest.approx(200 / 625)
    assert result["memory_ratio_vs_teacher_batch1"] == pytest.approx(100 / 400)
    assert result["gap_closed"] == 0.86 and result["models"]["distilled student"]["ndcg_at_10"] == 0.85
    assert "| distilled student | 22.7 | 200 / 100 |" in result["table_markdown"]
    assert result["memory_settings"] == {"memory_repeats": 3}


def test_update_memory_refuses_a_model_the_json_does_not_hold() -> None:
    with pytest.raises(ValueError, match="aligned student"):
        bench.update_memory(headline_json(), {"aligned student": {"peak_memory_mb": 1.0}}, 32, {})


def test_results_are_written_atomically_and_end_with_a_newline(tmp_path: Path) -> None:
    out = tmp_path / "headline.json"
    bench.atomic_write_json(out, {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1} and out.read_text().endswith("\n")
    assert [p.name for p in tmp_path.iterdir()] == ["headline.json"]  # no temporary file left behind


def test_update_aligned_adds_the_aligned_row_and_leaves_the_other_models_alone() -> None:
    before = headline_json()
    before["aligned_note"] = "the aligned student was not re-run"
    row = {"params_m": 23.0, "texts_per_s": 38.0, "ndcg_at_10": 0.81, "news_test_ndcg_at_10": 0.93,
           "suite_average": 0.60, "sentiment_accuracy": 0.75, "peak_memory_mb": 240.0, "peak_memory_mb_batch1": 118.0}
    result = bench.update_aligned(before, row, 0.86, "runs/a/checkpoints/step-000010", 32, {"precision": "fast"})
    assert result["asymmetric_ndcg_at_10"] == 0.86 and result["aligned_student_ndcg_at_10"] == 0.81
    assert result["aligned_checkpoint"] == "runs/a/checkpoints/step-000010" and "aligned_note" not in result
    assert result["gap_closed"] == 0.86 and result["memory_ratio_vs_teacher"] == 0.37
    assert result["table_markdown"].splitlines()[-1] == ("| aligned student | 23.0 | 240 / 118 | 38.0 | 0.8100 "
                                                         "| 0.9300 | 0.6000 | 0.7500 |")


def test_update_modes_refuse_a_json_of_another_checkpoint(tmp_path: Path) -> None:
    import argparse

    out = tmp_path / "headline.json"
    out.write_text(json.dumps({**headline_json(), "distilled_checkpoint": "runs/x/checkpoints/step-000001"}))
    other = argparse.Namespace(out=str(out), checkpoint="runs/y/checkpoints/step-000002")
    with pytest.raises(SystemExit, match="--aligned-only: .* not --checkpoint"):
        bench.existing_result(other, "--aligned-only")
    same = argparse.Namespace(out=str(out), checkpoint="runs/x/checkpoints/step-000001")
    assert bench.existing_result(same, "--aligned-only")["gap_closed"] == 0.86
    with pytest.raises(SystemExit, match="does not exist"):
        bench.existing_result(argparse.Namespace(out=str(tmp_path / "none.json"), checkpoint="c"), "--memory-only")


def test_memory_only_rewrites_the_existing_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The --memory-only path end to end, with the fresh-process measurement replaced by fixed figures."""
    import sys

    out = tmp_path / "headline.json"
    out.write_text(json.dumps({**headline_json(), "distilled_checkpoint": "runs/x/checkpoints/step-000001"}))
    figures = {"peak_memory_mb": 100.0, "peak_memory_mb_batch1": 50.0}
    monkeypatch.setattr(bench, "memory_rows", lambda paths, args: {name: dict(figures) for name in paths})
    monkeypatch.setattr(sys, "argv", ["headline.py", "--checkpoint", "runs/x/checkpoints/step-000001", "--memory-only",
                                      "--out", str(out)])
    bench.main()
    result = json.loads(out.read_text())
    assert result["memory_ratio_vs_teacher"] == 1.0 and result["gap_closed"] == 0.86
    assert result["memory_settings"]["command"].endswith(f"--out {out}")

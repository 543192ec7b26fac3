"""The suite average (MTEB style: mean of main scores over tasks, and per kind) and the suite's instruction tasks.

    pytest tests/test_suite_average.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_rows, write_beir, write_jsonl
from trainer.evaluation.runner import evaluate_checkpoint, suite_average, write_suite_average


def record(kind: str, score: float | None) -> dict[str, Any]:
    rows = [] if score is None else [{"main_score": score}]
    return {"scores": {"test": rows}, "embedstill": {"status": "ok" if score is not None else "failed",
                                                      "kind": kind}}


def test_suite_average_is_the_mean_over_tasks_and_per_kind() -> None:
    results = {"a": record("retrieval", 0.8), "b": record("classification", 0.6),
               "c": record("classification", 0.3), "d": record("clustering", 0.5)}
    average = suite_average(results)
    assert average["suite/average"] == pytest.approx((0.8 + 0.6 + 0.3 + 0.5) / 4)
    assert average["suite/kind/classification"] == pytest.approx(0.45)
    assert average["suite/kind/retrieval"] == pytest.approx(0.8)
    assert average["suite/kind/clustering"] == pytest.approx(0.5)
    assert average["suite/tasks"] == 4
    # A failed task leaves no average: a mean over fewer tasks is not comparable with another checkpoint's.
    assert suite_average({**results, "e": record("sts", None)}) == {}


def test_suite_average_file_covers_earlier_results_and_shows_in_the_leaderboard(tiny_model: Path,
                                                                                tmp_path: Path) -> None:
    from tests.test_evaluation import make_checkpoint
    from trainer.evaluation.leaderboard import update_run_reports

    checkpoint = make_checkpoint(tiny_model, tmp_path / "run" / "checkpoints" / "step-000010")
    rows = make_rows(16, seed=3)
    cls = write_jsonl(tmp_path / "cls.jsonl", [{"text": r["query"], "label": str(i % 2),
                                                 "split": "train" if i < 10 else "test"} for i, r in enumerate(rows)])
    tasks = [{"name": "ret", "kind": "retrieval", "path": str(write_beir(tmp_path / "beir", rows)), "split": "test"},
             {"name": "cls", "kind": "classification", "path": str(cls), "main_score": "accuracy"}]
    out = tmp_path / "run" / "eval" / "step-000010"
    # The watcher scores the tasks a checkpoint still needs: here one, then the other.
    first = evaluate_checkpoint(checkpoint, tasks[:1], out, device="cpu", log=lambda _: None)
    assert write_suite_average(out, tasks, log=lambda _: None) == {}  # "cls" not scored yet
    assert not (out / "suite_average.json").exists()
    second = evaluate_checkpoint(checkpoint, tasks[1:], out, device="cpu", log=lambda _: None)
    average = write_suite_average(out, tasks, log=lambda _: None)
    scores = [first["ret"]["scores"]["test"][0]["main_score"], second["cls"]["scores"]["test"][0]["accuracy"]]
    assert average["suite/average"] == pytest.approx(sum(scores) / 2)
    assert json.loads((out / "suite_average.json").read_text()) == average
    board = update_run_reports(tmp_path / "run")
    assert board[0]["suite_average"] == pytest.approx(average["suite/average"])
    assert set(board[0]) == {"run", "checkpoint", "step", "ret", "cls", "suite_average"}


def test_suite_names_the_training_task_of_each_instruction_task() -> None:
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        suite = compose("evaluate", overrides=["eval=suite"])
    tasks = {t.name: t for t in suite.eval.tasks}
    assert tasks["tweet-account"].task == "tweet-account" and tasks["tweet-account"].kind == "classification"
    assert tasks["review-movie"].task == "movie" and tasks["review-movie"].kind == "retrieval"
    assert tasks["review-movie"].path.endswith("eval/rt_review_movie")
    # model=instruct knows every training task the suite names, so its checkpoints are not refused on the suite.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        model = compose("train", overrides=["model=instruct", "data.train_files=[x]"]).model
    assert {t.task for t in suite.eval.tasks if t.task} <= set(model.instructions)

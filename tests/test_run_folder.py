"""A run that explains itself: train.log, summary.md, plots/, the best checkpoint, early stopping, and resume=auto
without a name.

    pytest tests/test_run_folder.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")
METRIC = "tiny/ndcg_at_10"


def records(run: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


@pytest.fixture
def scripted_scores(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The evaluator returns these scores, one per evaluation, in order (appended to by the test)."""
    from trainer.build import Evaluator

    scores: list[float] = []
    calls = iter(range(1000))

    def evaluate(self: Any, encoder: Any) -> dict[str, float]:
        value = scores[next(calls)]
        return {METRIC: value, "tiny/recall_at_10": value / 2}

    monkeypatch.setattr(Evaluator, "__call__", evaluate)
    yield scores


def test_train_log_keeps_the_console_across_a_resume_and_the_end_writes_summary_and_plots(compose) -> None:
    from trainer.loop import train

    recipe = ("train.max_steps=4", "train.save_every_n_steps=2", "eval.every_n_steps=2", "logger.every_n_steps=1")
    train(compose(*recipe, "train.stop_after_steps=2"))
    run = Path(compose().run_dir)
    first = (run / "train.log").read_text()
    assert "model " in first and "plan: negatives per query" in first and "training 4 steps" in first
    assert "step 2: evaluated in" in first and METRIC in first  # the evaluation, as a line
    assert "step 1/4 epoch 0 loss " in first and "samples/s" in first  # a line per metrics record
    assert "saved state/step-000002 and checkpoints/step-000002" in first

    train(compose(*recipe, "resume=auto"))
    log = (run / "train.log").read_text()
    assert log.startswith(first)  # appended, not replaced
    assert "resumed from" in log and "step 4: evaluated in" in log
    assert all(line.startswith("[20") for line in log.splitlines())  # each line stamped

    summary = (run / "summary.md").read_text()
    assert "| metric | before | after | change |" in summary and f"| {METRIC} |" in summary
    assert "- final checkpoint: checkpoints/step-000004" in summary
    assert "- steps: 4 of 4" in summary and "samples/s" in summary and "wall time" in summary
    best = max((r for r in records(run, "eval.jsonl") if r["step"] > 0), key=lambda r: r[METRIC])
    assert f"- best: step {best['step']}, {METRIC} {best[METRIC]:.4f}" in summary
    for name in ("loss.png", "lr.png", "eval.png"):
        assert (run / "plots" / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name


def test_keep_best_survives_rotation(compose, scripted_scores: list[float]) -> None:
    from trainer.loop import train

    scripted_scores += [0.2, 0.6, 0.3, 0.4, 0.5]  # steps 1..5: step 2 is the best
    cfg = compose("train.max_steps=5", "train.save_every_n_steps=1", "train.keep_last=1", "eval.every_n_steps=1",
                  "eval.before_training=false", f"train.keep_best={METRIC}", "logger.every_n_steps=1")
    train(cfg)
    run = Path(cfg.run_dir)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000002", "step-000005"]
    assert sorted(p.name for p in (run / "state").iterdir()) == ["step-000005"]  # states rotate as before
    assert json.loads((run / "checkpoints" / "best.json").read_text()) == {
        "metric": METRIC, "value": 0.6, "step": 2, "checkpoint": "checkpoints/step-000002"}
    assert (run / "checkpoints" / "best").resolve() == (run / "checkpoints" / "step-000002").resolve()
    done = json.loads((run / "DONE.json").read_text())
    assert done["best_checkpoint"] == "checkpoints/step-000002" and done["best"]["value"] == 0.6
    assert done["step"] == 5 and done["stopped"] is None
    assert (run / "checkpoints" / "step-000002" / "embedstill.json").exists()


def test_early_stopping_stops_after_patience_evaluations_without_improvement(compose,
                                                                            scripted_scores: list[float]) -> None:
    from trainer.loop import train

    scripted_scores += [0.1, 0.3, 0.2, 0.25, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]  # steps 3 and 4 do not beat step 2
    cfg = compose("train.max_steps=10", "train.keep_last=1", "eval.every_n_steps=1", "eval.before_training=false",
                  f"train.keep_best={METRIC}", "train.early_stopping_patience=2", "logger.every_n_steps=1")
    train(cfg)
    run = Path(cfg.run_dir)
    assert [r["step"] for r in records(run, "eval.jsonl")] == [1, 2, 3, 4]  # the final evaluation is step 4's
    assert records(run, "metrics.jsonl")[-1]["step"] == 4
    done = json.loads((run / "DONE.json").read_text())
    assert done["step"] == 4 and done["best_checkpoint"] == "checkpoints/step-000002"
    assert done["stopped"].startswith(f"early stopping: {METRIC} did not improve on 0.3000 (step 2) in 2 evaluations")
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000002", "step-000004"]
    assert json.loads((run / "checkpoints" / "step-000004" / "embedstill.json").read_text())["final"] is True
    assert "- ended: early stopping" in (run / "summary.md").read_text()
    assert "step 4: early stopping" in (run / "train.log").read_text()


def test_keep_best_and_patience_are_checked_before_anything_runs(compose) -> None:
    from trainer.loop import train

    for overrides, message in [(["train.keep_best=other/ndcg_at_10"], r"must be <task>/<score> of an eval task \(tiny"),
                               (["train.early_stopping_patience=2"], "needs train.keep_best"),
                               ([f"train.keep_best={METRIC}", "eval.tasks=[]"], "needs eval.tasks")]:
        cfg = compose(*overrides)
        with pytest.raises(ValueError, match=message):
            train(cfg)
        assert not Path(cfg.run_dir).exists()


def test_resume_auto_without_a_name_refuses_and_lists_resumable_runs(compose, tiny_model: Path,
                                                                     tiny_data: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    from hydra import compose as hydra_compose, initialize_config_dir

    from trainer.config import CONF_DIR
    from trainer.loop import train

    runs = tmp_path / "runs"
    for name, done in (("stopped", False), ("finished", True)):
        state = runs / name / "state" / "step-000002"
        state.mkdir(parents=True)
        (state / "trainer_state.json").write_text("{}")
        if done:
            (runs / name / "DONE.json").write_text("{}")
    (runs / "empty").mkdir()
    compose()  # registers the schema
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=[  # the fixture's overrides, less name=
            f"model.name_or_path={tiny_model}", f"data.train_files=[{tiny_data['train']}]", f"paths.runs={runs}",
            "eval.tasks=[]", "train.batch_size=8", "train.progress_bar=false", "resume=auto"])
    with pytest.raises(ValueError, match=r"resume=auto needs name=<run>.*can be resumed: stopped \(last state "
                                         r"step-000002\)\. Continue one with name=<run> resume=auto"):
        train(cfg)
    assert sorted(p.name for p in runs.iterdir()) == ["empty", "finished", "stopped"]  # no new timestamped dir


def test_a_resume_replays_the_best_and_the_patience_count(tmp_path: Path) -> None:
    """The evaluations before the resumed step decide the best and how many since it; the score before training
    (step 0) does not compete."""
    from types import SimpleNamespace

    from trainer.best_checkpoint import BestCheckpoint
    from trainer.run import RunDir

    run = RunDir(tmp_path)
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"step": step, METRIC: value}) + "\n"
                                                 for step, value in [(0, 0.9), (1, 0.2), (2, 0.5), (3, 0.4), (4, 0.3)]))
    checkpointer = SimpleNamespace(best=None)
    best = BestCheckpoint(METRIC, 3, run, checkpointer)  # type: ignore[arg-type]
    best.replay()
    assert (best.step, best.value, best.since) == (2, 0.5, 2)
    assert checkpointer.best == tmp_path / "checkpoints" / "step-000002"
    assert best.update(5, {METRIC: 0.45}, saved_at_this_step=True).startswith(
        f"early stopping: {METRIC} did not improve on 0.5000 (step 2) in 3 evaluations")
    with pytest.raises(KeyError, match="train.keep_best=tiny/ndcg_at_10: not an evaluation result"):
        best.update(6, {"tiny/recall_at_10": 1.0}, saved_at_this_step=True)

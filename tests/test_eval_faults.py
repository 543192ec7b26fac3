"""Evaluation under faults and bad input: no scoring on training rows, retries of what failed or changed, safe task
names, messages that name the file and line.

    pytest -q tests/test_eval_faults.py
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import make_rows, write_beir, write_jsonl
from trainer.evaluation.kinds import load_task
from trainer.evaluation.tasks import TaskFileError


def test_classification_never_scores_its_training_rows(tmp_path: Path) -> None:
    rng = random.Random(0)
    rows = [{"text": f"w{i} w{i + 1}", "label": rng.choice("ab")} for i in range(40)]  # random labels
    unmarked = write_jsonl(tmp_path / "cls.jsonl", rows)  # no split: every row would be fitted on and scored
    with pytest.raises(TaskFileError, match=r"cls.jsonl:1: split: missing"):
        load_task({"name": "c", "kind": "classification", "path": str(unmarked)})
    partly = write_jsonl(tmp_path / "partly.jsonl", [{**r, "split": "train"} for r in rows[:30]] + rows[30:])
    with pytest.raises(TaskFileError, match=r"partly.jsonl:31: split: missing"):
        load_task({"name": "c", "kind": "classification", "path": str(partly)})
    marked = write_jsonl(tmp_path / "marked.jsonl", [{**r, "split": "train" if i % 2 else "test"}
                                                     for i, r in enumerate(rows)])
    with pytest.raises(TaskFileError, match=r"marked.jsonl: split and train_split are both 'test'"):
        load_task({"name": "c", "kind": "classification", "path": str(marked), "train_split": "test"})
    data = load_task({"name": "c", "kind": "classification", "path": str(marked)})
    assert len(data.texts) == len(data.train_texts) == 20 and not set(data.texts) & set(data.train_texts)
    clustering = load_task({"name": "c", "kind": "clustering", "path": str(unmarked)})  # one split: fine there
    assert len(clustering.texts) == 40


def _save(tiny_model: Path, target: Path, step: int) -> Path:
    from trainer.models.checkpoint import save_checkpoint
    from trainer.models.encoder import Encoder, EncoderSpec

    spec = EncoderSpec(max_length_query=16, max_length_passage=32)
    return save_checkpoint(Encoder.from_pretrained(str(tiny_model), spec), target, {"step": step})


def _pairs(n: int) -> list[dict[str, Any]]:
    return [{"sentence1": f"w{i} w{i + 1}", "sentence2": f"w{i} w{i + 2}", "score": i % 4, "label": i % 2}
            for i in range(n)]


class Names(list):
    """A list of task names plus the set of names whose scoring fails."""
    fail: set[str]


@pytest.fixture
def scored(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the tasks scored, in order; a task named in ``scored.fail`` raises while scoring."""
    from trainer.evaluation import runner

    names = Names()
    names.fail = set()
    real = runner.score_task

    def spy(task: Any, data: Any, embed: Any) -> Any:
        names.append(task["name"])
        if task["name"] in names.fail:
            raise RuntimeError("out of memory (simulated)")
        return real(task, data, embed)

    monkeypatch.setattr(runner, "score_task", spy)
    return names


def test_a_rerun_evaluates_exactly_what_is_missing_failed_or_changed(tiny_model: Path, tmp_path: Path,
                                                                      scored: Any) -> None:
    from trainer.evaluation.watcher import EvalState, watch_run

    run = tmp_path / "run"
    _save(tiny_model, run / "checkpoints" / "step-000010", 10)
    ret = {"name": "ret", "kind": "retrieval", "path": str(write_beir(tmp_path / "beir", make_rows(10, seed=5)))}
    sts_file = write_jsonl(tmp_path / "sts.jsonl", [{k: p[k] for k in ("sentence1", "sentence2", "score")}
                                                    for p in _pairs(8)])
    typo = {"name": "sts", "kind": "sts", "path": str(tmp_path / "sts.jsnl")}

    def rerun(*tasks: dict[str, Any]) -> list[str]:
        scored.clear()
        watch_run(run, tasks, watch=False, device="cpu", log=lambda _: None)
        return sorted(scored)

    assert rerun(ret, typo) == ["ret"]  # sts: its file is missing, recorded as failed
    assert rerun(ret, typo) == []  # unchanged: a missing file stays missing, nothing to do
    fixed = {**typo, "path": str(sts_file)}
    assert rerun(ret, fixed) == ["sts"]  # the fixed task only
    pc = {"name": "pc", "kind": "pair_classification",
          "path": str(write_jsonl(tmp_path / "pc.jsonl", [{k: p[k] for k in ("sentence1", "sentence2", "label")}
                                                          for p in _pairs(8)]))}
    assert rerun(ret, fixed, pc) == ["pc"]  # an added task only
    with open(sts_file, "a") as handle:
        handle.write('{"sentence1": "w1 w9", "sentence2": "w2 w9", "score": 3}\n')
    assert rerun(ret, fixed, pc) == ["sts"]  # changed data only
    scored.fail = {"ret"}
    smaller = {**ret, "max_queries": 5}
    assert rerun(smaller, fixed, pc) == ["ret"]  # changed settings; this time scoring fails
    assert EvalState(run / "eval").data["checkpoints"]["step-000010"]["failed_tasks"] == ["ret"]
    scored.fail = set()
    assert rerun(smaller, fixed, pc) == ["ret"]  # a scoring failure may pass on a retry: retried
    assert rerun(smaller, fixed, pc) == []
    entry = EvalState(run / "eval").data["checkpoints"]["step-000010"]
    assert entry["failed_tasks"] == [] and {t["status"] for t in entry["tasks"].values()} == {"ok"}


def test_a_watcher_tries_a_failing_checkpoint_once_per_run(tiny_model: Path, tmp_path: Path, scored: Any) -> None:
    from trainer.evaluation.watcher import watch_run

    run = tmp_path / "run"
    _save(tiny_model, run / "checkpoints" / "step-000001", 1)
    (run / "DONE.json").write_text("{}")
    ret = {"name": "ret", "kind": "retrieval", "path": str(write_beir(tmp_path / "beir", make_rows(10, seed=5)))}
    scored.fail = {"ret"}
    watch_run(run, [ret], watch=True, poll_seconds=0.01, device="cpu", log=lambda _: None)
    assert scored == ["ret"]  # failed once, not retried in a loop; the next run retries it


def _compose_evaluate(*overrides: str) -> Any:
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=["device=cpu", *overrides])


def test_cli_checks_task_paths_before_watching(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.evaluation.watcher import run_from_config

    run = tmp_path / "run"
    _save(tiny_model, run / "checkpoints" / "step-000010", 10)
    beir = write_beir(tmp_path / "beir", make_rows(10, seed=5))
    tasks = f"eval.tasks=[{{name: ret, path: '{beir}'}}, {{name: sts, kind: sts, path: '{tmp_path}/sts.jsnl'}}]"
    with pytest.raises(FileNotFoundError, match=rf"eval task 'sts': path={tmp_path}/sts.jsnl: no such file"):
        run_from_config(_compose_evaluate(f"run_dir={run}", tasks), log=lambda _: None)
    assert not (run / "eval").exists()  # refused before anything was watched or written


def test_cli_exits_non_zero_when_a_task_failed(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    from trainer.evaluate import main

    run = tmp_path / "run"
    checkpoint = _save(tiny_model, run / "checkpoints" / "step-000010", 10)
    beir = write_beir(tmp_path / "beir", make_rows(10, seed=5))
    bad = tmp_path / "sts.jsonl"
    bad.write_text('{"sentence1": "w1", "sentence2": "w2", "score": 1}\n{"sentence1": "w1"\n')  # cut-off line
    tasks = f"eval.tasks=[{{name: ret, path: '{beir}'}}, {{name: sts, kind: sts, path: '{bad}'}}]"
    for target in (f"checkpoint={checkpoint}", f"run_dir={run}"):  # one checkpoint; then the run (recorded)
        monkeypatch.setattr("sys.argv", ["trainer.evaluate", target, "device=cpu", tasks])
        with pytest.raises(SystemExit) as stopped:
            main()
        assert stopped.value.code == 1
        assert "step-000010 sts: TaskFileError" in capsys.readouterr().err
    assert json.loads((run / "eval" / "step-000010" / "ret.json").read_text())["embedstill"]["status"] == "ok"


def test_task_names_are_plain_file_names_one_per_task(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.build import Evaluator
    from trainer.evaluation.runner import evaluate_checkpoint
    from trainer.evaluation.watcher import run_from_config

    checkpoint = _save(tiny_model, tmp_path / "ckpt", 1)
    sts = write_jsonl(tmp_path / "sts.jsonl", [{k: p[k] for k in ("sentence1", "sentence2", "score")}
                                               for p in _pairs(8)])
    for names, bad in [(["a/b", "a_b"], "a/b"), (["a_b", "A_B"], "A_B"), (["../up"], "../up"), ([".hidden"], ".hidden"),
                       (["model_meta"], "model_meta"), (["ok", "step"], "step"), ([""], "")]:
        tasks = [{"name": n, "kind": "sts", "path": str(sts)} for n in names]
        with pytest.raises(ValueError, match=rf"eval task {re.escape(repr(bad))}: name: "):
            evaluate_checkpoint(checkpoint, tasks, tmp_path / "out", device="cpu", log=lambda _: None)
    assert not (tmp_path / "out").exists()  # refused before anything was written
    cfg = _compose_evaluate(f"checkpoint={checkpoint}", f"eval.tasks=[{{name: 'x/y', kind: sts, path: '{sts}'}}]")
    with pytest.raises(ValueError, match=r"eval task 'x/y': name: "):
        Evaluator(cfg.eval)  # the training-time evaluator, built when training starts
    with pytest.raises(ValueError, match=r"eval task 'x/y': name: "):
        run_from_config(cfg, log=lambda _: None)


def test_reports_survive_results_written_under_an_unsafe_name(tmp_path: Path) -> None:
    """Results written before names were checked (task "a/b" in a_b.json) no longer break every later report."""
    from trainer.evaluation.leaderboard import update_run_reports

    folder = tmp_path / "run" / "eval" / "step-000001"
    folder.mkdir(parents=True)
    (folder / "model_meta.json").write_text(json.dumps({"step": 1}))
    record = {"task_name": "a/b", "scores": {"test": [{"main_score": 0.5}]}}
    (folder / "a_b.json").write_text(json.dumps(record))
    rows = update_run_reports(tmp_path / "run")
    assert rows[0]["a_b"] == 0.5 and (tmp_path / "run" / "eval" / "plots" / "a_b.png").exists()


def test_training_refuses_an_unsafe_task_name_before_any_work(tiny_model: Path, tiny_data: dict[str, Path],
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    from trainer.train import main

    monkeypatch.setattr("sys.argv", ["trainer.train", f"model.name_or_path={tiny_model}", "name=t",
                                     f"data.train_files=[{tiny_data['train']}]", f"paths.runs={tmp_path}",
                                     f"eval.tasks=[{{name: 'a/b', path: '{tiny_data['beir']}'}}]"])
    with pytest.raises(SystemExit):
        main()
    assert "eval task 'a/b': name: " in capsys.readouterr().err
    assert not (tmp_path / "t" / "config.yaml").exists()  # stopped before the run was set up

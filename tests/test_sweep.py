"""Sweeps: a 3-trial Optuna sweep over the tiny model, a grid multirun, the summary, bad sweep configs.

    pytest -q tests/test_sweep.py
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT


def _train_multirun(tiny_model: Path, tiny_data: dict[str, Path], runs: Path, *overrides: str,
                    ) -> subprocess.CompletedProcess:
    base = [f"model.name_or_path={tiny_model}", f"data.train_files=[{tiny_data['train']}]",
            f"eval.tasks=[{{name: tiny, path: '{tiny_data['beir']}', kind: retrieval}}]", f"paths.runs={runs}",
            "train.batch_size=8", "train.max_steps=3", "train.progress_bar=false", "model.max_length_passage=32",
            "model.max_length_query=16", "train.keep_last=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "trainer.train", "-m", *base, *overrides], capture_output=True,
                          text=True, cwd=runs.parent, env=env, timeout=240)


def test_optuna_sweep_ranks_trials_and_survives_a_failed_trial(tiny_model: Path, tiny_data: dict[str, Path],
                                                             tmp_path: Path) -> None:
    from trainer.sweep import write_summary

    runs = tmp_path / "runs"
    # data.max_rows=4 makes no full batch of 8: that trial fails; the sampler's seed makes the draw fixed.
    proc = _train_multirun(tiny_model, tiny_data, runs, "hparams_search=lr_temperature", "name=opt",
                           "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=0",
                           "hydra.sweeper.params={optim.lr: 'tag(log, interval(1e-3, 3e-1))', "
                           "loss.temperature: 'interval(0.02, 0.5)'}", "data.max_rows=96,4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = runs / "opt-sweep"
    trials = {int(p.name): json.loads((p / "trial.json").read_text()) for p in sweep.iterdir() if p.name.isdigit()}
    assert sorted(trials) == [0, 1, 2]
    statuses = sorted(t["status"] for t in trials.values())
    assert "failed" in statuses and "ok" in statuses, statuses  # a failure is recorded and the sweep went on
    for num, trial in trials.items():
        run = sweep / str(num)
        assert yaml.safe_load((run / "config.yaml").read_text())["run_dir"] == str(run)  # run dir = job dir
        if trial["status"] == "ok":  # the objective is the run's own last eval record of the main metric
            last = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
            assert trial["objective"] == last["tiny/ndcg_at_10"] and (run / "DONE.json").exists()
        else:
            assert "no full global batch" in trial["error"]

    with open(sweep / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["trial"]) for r in rows][:len([t for t in trials.values() if t["status"] == "ok"])] == sorted(
        (n for n, t in trials.items() if t["status"] == "ok"), key=lambda n: -trials[n]["objective"])
    assert set(rows[0]) >= {"optim.lr", "loss.temperature", "data.max_rows", "tiny/ndcg_at_10", "rank"}
    assert rows[-1]["status"] == "failed" and rows[-1]["rank"] == ""
    assert (sweep / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = (sweep / "summary.md").read_text()
    (sweep / "summary.md").unlink()
    assert write_summary(sweep) == first  # rebuilt from the run dirs alone
    assert "| 1 |" in first


def test_grid_multirun_records_failed_trial(tiny_model: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = _train_multirun(tiny_model, tiny_data, runs, "name=grid", "train.max_steps=1", "optim.lr=1e-3,1e-2",
                           "data.max_rows=96,4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(runs / "grid-sweep" / "summary.csv")))
    assert len(rows) == 4
    assert sorted((r["optim.lr"], r["data.max_rows"], r["status"]) for r in rows) == [
        ("0.001", "4", "failed"), ("0.001", "96", "ok"), ("0.01", "4", "failed"), ("0.01", "96", "ok")]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]  # ranked trials first


def _multirun_config(tiny_model: Path, runs: Path, *overrides: str):
    """The config Hydra composes for ``-m`` (sweep overrides kept in hydra.overrides.task), with no trial run."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from trainer.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return GlobalHydra.instance().hydra.compose_config(
            "train", [f"model.name_or_path={tiny_model}", f"paths.runs={runs}", *overrides],
            run_mode=RunMode.MULTIRUN, with_log_configuration=False)


def test_sweep_naming_a_missing_key_fails_before_the_first_trial(tiny_model: Path, tmp_path: Path) -> None:
    import pytest

    from trainer.sweep import SweepSummary

    runs = tmp_path / "runs"
    bad = _multirun_config(tiny_model, runs, "hparams_search=lr_temperature",
                           "++hydra.sweeper.params={optim.lrr: 'interval(1e-3, 1e-2)'}")
    with pytest.raises(KeyError, match="swept parameter.s. optim.lrr not found"):
        SweepSummary().on_multirun_start(bad)
    with pytest.raises(KeyError, match="data.max_rowz"):
        SweepSummary().on_multirun_start(_multirun_config(tiny_model, runs, "data.max_rowz=8,16"))
    assert not runs.exists()  # nothing written, no trial started
    good = _multirun_config(tiny_model, runs, "hparams_search=lr_temperature", "data.max_rows=8,16",
                            "model=minilm,e5_style")
    SweepSummary().on_multirun_start(good)
    info = json.loads((Path(good.hydra.sweep.dir) / "sweep.json").read_text())
    assert info["swept"] == ["optim.lr", "loss.temperature", "data.max_rows", "model"]
    assert info["direction"] == "maximize"


def test_every_hparams_search_config_names_existing_keys(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.config import CONF_DIR
    from trainer.sweep import check_swept_keys, swept_keys

    for path in sorted((CONF_DIR / "hparams_search").glob("*.yaml")):
        cfg = _multirun_config(tiny_model, tmp_path, f"hparams_search={path.stem}")
        assert "optuna" in cfg.hydra.sweeper._target_ and swept_keys(cfg), path.name
        check_swept_keys(cfg)

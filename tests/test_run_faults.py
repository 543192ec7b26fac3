"""Faults around a run dir: a second run with the same name, restarts after kills, corrupted or foreign states,
resume with changed settings, loggers and bad data.

    pytest tests/test_run_faults.py
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent
SHORT = ("train.max_steps=4", "train.save_every_n_steps=2", "eval.tasks=[]", "logger.every_n_steps=1",
         "train.keep_last=0")


def steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_second_run_with_the_same_name_is_refused_naming_the_holder(compose) -> None:
    from trainer.loop import train

    cfg = compose(*SHORT)
    run = Path(cfg.run_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom trainer.runlock import RunLock\n"
                               f"with RunLock({str(run)!r}):\n    print('held', flush=True)\n    time.sleep(120)"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for resume in ("null", "auto"):
            with pytest.raises(RuntimeError, match=rf"another training run holds this run dir \(pid {holder.pid} "
                                                   rf"on {socket.gethostname()}, started 20\d\d-"):
                train(compose(*SHORT, f"resume={resume}"))
        assert not (run / "metrics.jsonl").exists() and not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed without releasing: its lock is stale and the next start takes it over.
    assert json.loads((run / "run.lock").read_text())["pid"] == holder.pid
    train(compose(*SHORT))
    assert steps(run) == [1, 2, 3, 4] and not (run / "run.lock").exists()


def test_fresh_start_after_a_kill_before_the_first_save(compose) -> None:
    """A killed attempt left metrics and temporaries but no state: the restart logs each step once."""
    from trainer.loop import train

    cfg = compose(*SHORT)
    run = Path(cfg.run_dir)
    write_jsonl(run / "metrics.jsonl", [{"step": 1, "loss": 9.0}, {"step": 2, "loss": 9.0}])
    (run / "state" / ".tmp-step-000002").mkdir(parents=True)
    (run / "state" / ".tmp-step-000002" / "model.safetensors").write_bytes(b"partial")
    (run / "checkpoints" / ".tmp-step-000002-abc").mkdir(parents=True)
    train(compose(*SHORT, "resume=auto"))
    assert steps(run) == [1, 2, 3, 4]
    assert not list(run.rglob(".tmp-*"))


def test_resume_drops_a_cut_off_last_line_and_falls_back_from_a_corrupted_state(compose, capsys) -> None:
    from trainer.loop import train

    run = Path(compose(*SHORT).run_dir)
    train(compose(*SHORT, "train.max_steps=6", "train.stop_after_steps=4"))
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 5, "loss": 1.')  # the kill hit mid-write
    model = run / "state" / "step-000004" / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # the newest state is corrupted
    capsys.readouterr()
    train(compose(*SHORT, "train.max_steps=6", "resume=auto"))
    out = capsys.readouterr()
    text = out.out + out.err
    assert "cannot resume step-000004" in text and "resumed from" in text and "step-000002" in text
    assert "dropped a cut-off last line" in text
    assert steps(run) == [1, 2, 3, 4, 5, 6]


def test_resume_may_change_settings_that_do_not_touch_the_weights(compose) -> None:
    from trainer.loop import train

    train(compose(*SHORT, "train.stop_after_steps=2"))
    with pytest.raises(ValueError, match=r"optim.lr.*Only these keys may change on resume: .*train.keep_last"):
        train(compose(*SHORT, "resume=auto", "optim.lr=1e-3"))
    train(compose(*SHORT, "resume=auto", "train.keep_last=1", "train.save_every_n_steps=3", "data.on_error=skip"))
    assert steps(Path(compose().run_dir)) == [1, 2, 3, 4]


def test_resume_from_a_state_outside_its_run_dir_checks_the_config_and_writes_provenance(compose,
                                                                                         tmp_path: Path) -> None:
    from trainer.loop import train

    train(compose(*SHORT, "train.stop_after_steps=2"))
    state = tmp_path / "copied" / "step-000002"
    shutil.copytree(Path(compose().run_dir) / "state" / "step-000002", state)
    assert not list(state.glob("custom_checkpoint_*"))  # our own parts (lr schedule) are JSON, not pickles
    saved = json.loads((state / "trainer_state.json").read_text())
    assert saved["scheduler"]["last_epoch"] == 2 and saved["world_size"] == 1
    with pytest.raises(ValueError, match=r"cannot resume .*optim.lr"):
        train(compose(*SHORT, "name=other", f"resume={state}", "optim.lr=1e-3"))
    other = compose(*SHORT, "name=other", f"resume={state}")
    train(other)
    info = json.loads((Path(other.run_dir) / "run_info.json").read_text())
    assert info["resumed_from"] == str(state) and (Path(other.run_dir) / "config.yaml").exists()
    assert steps(Path(other.run_dir)) == [3, 4]


def test_wandb_respects_wandb_mode_disabled(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.metrics_logger import MetricsLogger
    from trainer.run import RunDir

    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = compose("logger=wandb")
    assert cfg.logger.mode == "offline"
    run = RunDir(cfg.run_dir)
    run.root.mkdir(parents=True)
    logger = MetricsLogger(cfg.logger, run, cfg)
    logger.log({"step": 1, "loss": 1.0})
    logger.finish()
    assert logger.wandb is None and not (run.root / "wandb").exists()


def test_bad_data_leaves_no_run_dir_behind(compose, tmp_path: Path) -> None:
    from trainer.data.schema import DataError
    from trainer.loop import train

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": ["p"]}\n{"query": "q", "pos": []}\n')
    cfg = compose(f"data.train_files=[{bad}]")
    with pytest.raises(DataError, match=r"bad.jsonl:2: pos: empty list"):
        train(cfg)
    assert not Path(cfg.run_dir).exists()


def test_a_state_saved_before_a_key_existed_resumes_when_the_key_is_off(compose, tmp_path: Path) -> None:
    """Upgrading mid-run: a switch added since the state was saved, left off, trains the same thing."""
    from trainer.run import check_resume_config, trained_config

    cfg = compose(*SHORT)
    saved = json.loads(json.dumps(trained_config(cfg), default=str))
    older = {k: v for k, v in saved.items() if k != "distill.align"}
    assert len(older) == len(saved) - 1  # the key exists today and is off by default
    check_resume_config(tmp_path / "state" / "step-000002", cfg, {"trained_config": older})
    with pytest.raises(ValueError, match=r"distill.align: None -> True"):
        check_resume_config(tmp_path / "state" / "step-000002", compose(*SHORT, "distill.align=true"),
                            {"trained_config": older})

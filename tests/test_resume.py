"""Exact resume: a run SIGKILLed mid-epoch and restarted with resume=auto reproduces the uninterrupted run.

    pytest tests/test_resume.py

GradCache (mini-batches of 5), LoRA adapters (with dropout), dropout in the backbone, a cached bi-encoder
teacher with listwise-KL distillation, and an epoch boundary are all in play. fp32 on CPU: the logged losses
agree to 1e-6 at every step and the final weights to 1e-6.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent


def train_command(tiny_model: Path, train_file: Path, runs: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trainer.train", f"model.name_or_path={tiny_model}",
            f"data.train_files=[{train_file}]", "eval=none", f"paths.runs={runs}", f"name={name}",
            "model.max_length_query=16", "model.max_length_passage=32", "train.progress_bar=false",
            "logger.every_n_steps=1", "train.num_threads=1",
            "train.mixed_precision=no",  # as the compose fixture: runs in and out of process compare exactly
            *extra]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def load_weights(state: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(state / "model.safetensors"))


def test_sigkill_resume_reproduces_uninterrupted_run(tiny_model: Path, tiny_data: dict[str, Path],
                                                     tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # 96 rows / 16 = 6 batches per epoch: 9 steps cross an epoch boundary.
    recipe = ["train.batch_size=16", "data.num_negatives=1", "train.max_steps=9", "train.save_every_n_steps=2",
              "train.keep_last=5", "train.mini_batch_size=5", "model.lora.enabled=true", "optim.lr=1e-3",
              "teacher=mpnet", f"teacher.name_or_path={tiny_model}", "distill=kl"]

    def command(name: str, *extra: str) -> list[str]:
        return train_command(tiny_model, tiny_data["train"], runs, name, *recipe,
                             f"teacher.cache_root={tmp_path / ('cache-' + name)}", *extra)

    logs = {n: open(tmp_path / f"{n}.log", "w") for n in ("reference", "victim")}
    reference = subprocess.Popen(command("reference"), env=env(), cwd=ROOT, stdout=logs["reference"],
                                 stderr=subprocess.STDOUT)
    victim = subprocess.Popen(command("victim"), env=env(), cwd=ROOT, stdout=logs["victim"], stderr=subprocess.STDOUT)
    marker = runs / "victim" / "state" / "step-000004" / "trainer_state.json"
    deadline = time.time() + 150
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, (tmp_path / "victim.log").read_text()[-3000:]
    assert marker.exists() and not (runs / "victim" / "DONE.json").exists()
    killed_at = max(r["step"] for r in metrics(runs / "victim"))
    assert killed_at < 9

    resumed = subprocess.run(command("victim", "resume=auto"), env=env(), cwd=ROOT, capture_output=True, text=True,
                             timeout=150)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert reference.wait(timeout=150) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr

    expected = {r["step"]: r for r in metrics(runs / "reference")}
    assert sorted(expected) == list(range(1, 10))
    got = metrics(runs / "victim")
    assert [r["step"] for r in got] == list(range(1, 10))  # records after the last state were dropped on resume
    for record in got:  # every step, before the kill and after the resume, matches the uninterrupted run
        want = expected[record["step"]]
        for key in ("loss", "contrastive", "kl", "lr"):
            assert abs(record[key] - want[key]) <= 1e-6, (record["step"], key, record[key], want[key])

    final_ref = load_weights(runs / "reference" / "state" / "step-000009")
    final_got = load_weights(runs / "victim" / "state" / "step-000009")
    assert final_ref.keys() == final_got.keys() and any("lora_B" in k for k in final_ref)
    assert any(k.startswith("distill.") or "lora" in k for k in final_ref)
    for key in final_ref:
        assert (final_ref[key] - final_got[key]).abs().max() <= 1e-6, key
    assert json.loads((runs / "victim" / "DONE.json").read_text())["step"] == 9

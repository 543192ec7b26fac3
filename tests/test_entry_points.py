"""Every stage starts the same way (``python -m trainer.<stage>`` and ``embedstill <stage>``) and ``--help`` works."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import STAGES

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("module", [module for module, _ in STAGES.values()] + ["trainer.cli"])
def test_every_entry_point_answers_help(module: str) -> None:
    out = run("-m", module, "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr and len(out.stdout.strip()) > 40


def test_embedstill_runs_a_stage_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    out = run("-m", "trainer.cli", "sweep", "--help")
    assert out.returncode == 0 and "sweep_dir" in out.stdout, out.stderr[-2000:]
    missing = run("-m", "trainer.cli", "sweep", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr and "Traceback" not in missing.stderr
    unknown = run("-m", "trainer.cli", "nope")
    assert unknown.returncode == 2 and "unknown stage 'nope'" in unknown.stderr

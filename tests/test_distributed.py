"""Loss and gradients on 2 processes (torchrun, gloo) equal one process on the concatenated batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from dist_infonce import loss_and_grad, make_batch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_two_process_infonce_equals_single_process(tmp_path: Path) -> None:
    out = tmp_path / "dist.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    # --standalone: a free port per launch, so parallel test runs never meet on one.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "dist_infonce.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for symmetric in (False, True):
        loss, grad = loss_and_grad(*make_batch(), symmetric=symmetric)
        got = results[str(symmetric)]
        assert abs(got["loss"] - loss) < 1e-6, (symmetric, got["loss"], loss)
        torch.testing.assert_close(torch.tensor(got["grad"]), grad, atol=1e-6, rtol=1e-5)

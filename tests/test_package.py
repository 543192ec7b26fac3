"""The package imported is this repo's, and a non-editable install finds its configs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_trainer_is_this_repo() -> None:
    import trainer

    # Another PyPI distribution also installs a top-level ``trainer``: make sure it is not the one imported.
    assert Path(trainer.__file__).resolve().is_relative_to(ROOT), trainer.__file__


def test_non_editable_install_finds_conf(tmp_path: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "trainer" / "conf" / "train.yaml").exists()
    assert (target / "trainer" / "conf" / "experiment" / "demo.yaml").exists()
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    # Run from an unrelated directory so the checkout cannot be found on sys.path.
    out = subprocess.run([sys.executable, "-m", "trainer.train", "experiment=demo", "--cfg", "job"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "max_length_passage: 128" in out.stdout
    where = subprocess.run([sys.executable, "-c", "import trainer; print(trainer.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(target))

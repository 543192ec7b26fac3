"""bench/scaling.py measures what it says: cold mining points even on a rerun, training points that run, and a
failed point that loses none of the points measured before it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import load_bench


def test_a_mining_point_never_reuses_an_earlier_runs_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.mining.pipeline as pipeline

    scaling = load_bench("scaling")
    folder = tmp_path / "mine-100"
    (folder / "cache").mkdir(parents=True)
    (folder / "cache" / "embeddings.npy").write_bytes(b"from the last run")
    (folder / "out").mkdir()
    seen: dict[str, Any] = {}

    def fake_inputs(work: Path, passages: int, target: Path) -> dict[str, int]:
        return {"passages": passages, "queries": passages // 4}

    def fake_run(cfg: Any) -> dict[str, Any]:  # what the real pipeline would find in its cache folder
        seen["cached"] = sorted(p.name for p in Path(cfg.cache_dir).glob("*")) if Path(cfg.cache_dir).exists() else []
        return {"seconds": {"encode": 1.0}, "index": {"kind": "flat"}}

    monkeypatch.setattr(scaling, "mining_inputs", fake_inputs)
    monkeypatch.setattr(pipeline, "run", fake_run)
    result = scaling.mine_point({"stage": "mine", "passages": 100}, tmp_path, threads=1)
    assert seen["cached"] == [] and result["stage_seconds"] == {"encode": 1.0}


def test_a_training_point_runs_plain_and_gradcache_steps() -> None:
    """The train stage builds the Batch the objective reads (it once passed a dict and failed at the 13th point)."""
    from trainer import assets

    if not (Path(__file__).resolve().parents[1] / "data/build/news/train.jsonl").exists():
        pytest.skip("news data not prepared (python data/prepare.py news)")
    assets.minilm()  # the bundled model (make venv installs it)
    scaling = load_bench("scaling")
    for mini in (0, 2):
        result = scaling.train_point({"batch": 4, "mini": mini, "steps": 2, "max_length": 16}, Path("."), threads=1)
        assert result["samples_per_s"] > 0 and len(result["step_seconds"]) == 2


def test_resume_keeps_finished_points_and_a_fresh_run_forgets_them(tmp_path: Path) -> None:
    scaling = load_bench("scaling")
    path = tmp_path / "points-full.jsonl"
    point = {"stage": "mine", "passages": 10}
    path.write_text('{"point": {"passages": 10, "stage": "mine"}, "result": {"stage": "mine", "seconds": 3.0}}\n')
    assert scaling.finished_points(path, resume=True)[json.dumps(point, sort_keys=True)]["seconds"] == 3.0
    assert scaling.finished_points(path, resume=False) == {} and not path.exists()


def test_recall_against_exact_by_hand() -> None:
    import numpy as np

    load_bench("scaling")  # puts bench/ on the path
    from scaling_data import recall_at

    exact = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[1, 9, 3], [6, 7, 8]])
    assert recall_at(found, exact, 2) == 0.25  # row 1: {1} of {1, 2}; row 2: none of {4, 5}
    assert recall_at(found, exact, 3) == 0.5  # {1, 3} and {6}: 3 of 6

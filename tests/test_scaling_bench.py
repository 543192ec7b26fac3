"""bench/scaling.py measures what it says: every mining point starts from a cold cache, even on a rerun."""
from __future__ import annotations

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

"""``mine/index=auto``: exact or approximate search by corpus size, and the recall report.json states for it.

    pytest -q tests/test_mining_index.py
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.mining.config import IndexConfig, SelectConfig
from trainer.mining.index import build_index, recall_against_exact, resolve_index, search
from trainer.mining.pipeline import mine_negatives
from trainer.models.encoder import Encoder, EncoderSpec

from test_mining import CORPUS, clustered, tiny_examples


def test_auto_is_exact_up_to_the_threshold_and_approximate_beyond() -> None:
    auto = IndexConfig(kind="auto", exact_max_passages=1000, approximate="hnsw", ef_search=64)
    assert resolve_index(auto, 1000).kind == "flat"
    beyond = resolve_index(auto, 1001)
    assert beyond.kind == "hnsw" and beyond.ef_search == 64  # the approximate kind keeps its settings
    assert resolve_index(IndexConfig(kind="ivf"), 10).kind == "ivf"  # an explicit kind is left alone
    with pytest.raises(ValueError, match="index.approximate must be one of ivf, hnsw, got 'flat'"):
        resolve_index(IndexConfig(kind="auto", approximate="flat", exact_max_passages=1), 5)
    with pytest.raises(ValueError, match="flat, ivf, hnsw or auto"):
        build_index(np.eye(4, dtype=np.float32), IndexConfig(kind="auto"))  # resolve first, never built as such


def test_recall_against_exact_equals_a_plain_count() -> None:
    corpus, queries = clustered(n_clusters=60, per=80, dim=32, seed=1)  # (4800, 32), (200, 32)
    full = queries @ corpus.T  # (200, 4800): the reference only
    exact = np.argsort(-full, axis=1, kind="stable")[:, :10]
    # One cluster visited of 64: misses part of each exact top-10.
    _, approx = search(build_index(corpus, IndexConfig(kind="ivf", nlist=64, nprobe=1)), queries, k=10)
    plain = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.tolist(), exact.tolist())])
    recall, sampled = recall_against_exact(corpus, queries, approx, sample=1000)
    assert sampled == 200 and recall == pytest.approx(plain, abs=1e-9) and recall < 0.99
    recall_50, sampled_50 = recall_against_exact(corpus, queries, approx, sample=50, seed=3)
    rows = np.sort(np.random.default_rng(3).choice(200, size=50, replace=False))
    assert sampled_50 == 50 and recall_50 == pytest.approx(
        np.mean([len(set(approx[r]) & set(exact[r])) / 10 for r in rows]), abs=1e-9)
    assert recall_against_exact(corpus, queries, exact, sample=1000) == (1.0, 200)


def test_mining_reports_the_kind_used_and_its_expected_recall(tiny_model: Path, tmp_path: Path) -> None:
    enc = Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_passage=32))
    sel = SelectConfig(num_negatives=3, relative=None, max_rank=10)
    small = mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(kind="auto"), sel)
    assert small.index["requested"] == "auto" and small.index["kind"] == "flat"
    assert small.index["expected_recall_at_k"] == 1.0 and small.index["passages"] == len(CORPUS)
    exact = mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(kind="flat"), sel)
    assert small.negatives == exact.negatives

    large = IndexConfig(kind="auto", exact_max_passages=len(CORPUS) - 1, approximate="ivf", nlist=4, nprobe=1)
    approx = mine_negatives(enc, tiny_examples(), CORPUS, large, sel, cache_root=tmp_path)
    assert approx.index["kind"] == "ivf" and approx.index["settings"] == {"nlist": 4, "nprobe": 1}
    assert approx.index["exact_max_passages"] == len(CORPUS) - 1 and "5 sampled queries" in approx.index["recall_how"]
    cached = mine_negatives(enc, tiny_examples(), CORPUS, large, sel, cache_root=tmp_path)
    assert cached.counts["candidates_cached"] == 1 and cached.index == approx.index  # kept with the stored result
    assert 0.0 < approx.index["expected_recall_at_k"] <= 1.0


def test_mine_auto_writes_the_index_block_to_report_json(tiny_model: Path, tiny_data: dict[str, Path],
                                                        tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR
    from trainer.mining.config import register_mine_configs
    from trainer.mining.pipeline import run

    register_mine_configs()
    reports = {}
    for name, threshold in (("exact", 100_000), ("approximate", 1)):
        out = tmp_path / name
        overrides = [f"model.name_or_path={tiny_model}", f"input_files=[{tiny_data['train']}]", f"out_dir={out}",
                     "cache_dir=null", "model.max_length_passage=32", "select.num_negatives=2", "select.relative=null",
                     "histogram=false", "mine/index=auto", f"index.exact_max_passages={threshold}"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            run(compose(config_name="mine", overrides=overrides))
        reports[name] = json.loads((out / "report.json").read_text())["index"]
    assert reports["exact"]["kind"] == "flat" and reports["exact"]["expected_recall_at_k"] == 1.0
    assert reports["approximate"]["kind"] == "hnsw" and reports["approximate"]["requested"] == "auto"
    assert 0.0 < reports["approximate"]["expected_recall_at_k"] <= 1.0
    assert reports["exact"]["passages"] == reports["approximate"]["passages"] > 1

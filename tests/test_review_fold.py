"""The review fold (bench/review_fold.py): the dev counterpart of the instruction-following probe.

    pytest tests/test_review_fold.py
"""
from __future__ import annotations

import pytest

from tests.conftest import load_bench

bench = load_bench("review_fold")


def test_fold_movies_takes_eligible_movies_only_and_is_seeded() -> None:
    reviews = [(f"a{i}", "a") for i in range(3)] + [(f"b{i}", "b") for i in range(3)] + [("c0", "c")]
    reviews += [(f"d{i}", "d") for i in range(5)]  # d has reviews but is not a trained movie
    chosen = bench.fold_movies(reviews, {"a", "b", "c"}, n=2, min_reviews=3, seed=7)
    assert chosen == ["a", "b"]  # c has one review, d is not a candidate
    assert bench.fold_movies(reviews, {"a", "b", "c"}, n=1, min_reviews=3, seed=7) == \
        bench.fold_movies(reviews, {"a", "b", "c"}, n=1, min_reviews=3, seed=7)
    with pytest.raises(SystemExit, match="only 2 training movies"):
        bench.fold_movies(reviews, {"a", "b", "c"}, n=3, min_reviews=3, seed=7)


def test_without_texts_drops_held_queries_and_positives() -> None:
    rows = [{"query": "held", "pos": ["x"], "label": "m"},
            {"query": "q1", "pos": ["held", "y"], "label": "m"},
            {"query": "q2", "pos": ["held"], "label": "m"}]
    assert bench.without_texts(rows, {"held"}) == [{"query": "q1", "pos": ["y"], "label": "m"}]


def test_prepared_fold_trains_on_no_fold_review(tmp_path) -> None:
    import json

    build = bench.BUILD
    if not (build / "instruct" / "manifest.json").exists() or not (build / "eval" / "probe_reviews.jsonl").exists():
        pytest.skip("prepared data missing: python data/prepare_text.py instruct && python data/prepare_eval.py")
    summary = bench.build(tmp_path / "fold", movies=10, min_reviews=30, seed=7)
    probe = [json.loads(line) for line in open(tmp_path / "fold" / "eval" / "probe_reviews.jsonl")]
    texts, movies = {r["text"] for r in probe}, {r["movie"] for r in probe}
    assert len(movies) == 10 and summary["probe_reviews"] == len(probe)
    test_probe = {json.loads(line)["text"] for line in open(build / "eval" / "probe_reviews.jsonl")}
    assert not texts & test_probe  # training movies only: the test-side probe stays unseen
    for task in bench.REVIEW_TASKS:
        for line in open(tmp_path / "fold" / "instruct" / f"{task}.jsonl"):
            row = json.loads(line)
            assert row["query"] not in texts and not texts & set(row["pos"])
            assert task != "movie" or row["label"] not in movies

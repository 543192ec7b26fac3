"""The instruction-following probe (bench/instructions.py): k-NN label agreement on hand-made embeddings.

    pytest tests/test_instructions_probe.py
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_bench, write_jsonl


bench = load_bench("instructions")


def test_knn_agreement_hand_computed() -> None:
    # Unit vectors; dot products: e0.e1 0.8, e0.e2 0.6, e0.e3 0, e1.e2 0.96, e1.e3 0.6, e2.e3 0.8.
    emb = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]])
    # k=2 neighbours: e0 -> e1, e2; e1 -> e2, e0; e2 -> e1, e3; e3 -> e2, e1.
    assert bench.knn_agreement(emb, ["p", "p", "n", "n"], k=2) == pytest.approx((0.5 + 0.5 + 0.5 + 0.5) / 4)
    assert bench.knn_agreement(emb, ["x", "y", "y", "x"], k=2) == pytest.approx((0 + 0.5 + 0.5 + 0) / 4)
    with pytest.raises(ValueError, match="more than 4 items"):
        bench.knn_agreement(emb, ["p"] * 4, k=4)


def test_probe_shows_the_crossover_of_a_model_that_follows_instructions() -> None:
    sentiment, movie = ["p", "p", "n", "n"], ["x", "y", "y", "x"]
    # Under the sentiment instruction reviews pair up by sentiment (0-1, 2-3), under the movie one by film (0-3, 1-2).
    under_sentiment = np.array([[1, 0], [0.995, 0.1], [0, 1], [0.1, 0.995]])
    under_movie = np.array([[1, 0], [0, 1], [0.1, 0.995], [0.995, 0.1]])
    numbers = bench.probe_numbers({"movie-sentiment": under_sentiment, "movie": under_movie},
                                  {"sentiment": sentiment, "movie": movie}, k=1)
    assert numbers == {"agreement/sentiment/under/movie-sentiment": 1.0, "agreement/movie/under/movie-sentiment": 0.0,
                       "agreement/sentiment/under/movie": 0.0, "agreement/movie/under/movie": 1.0}
    assert bench.crossovers(numbers) == {"crossover_sentiment": 1.0, "crossover_movie": 1.0}
    # A model that ignores its instructions embeds alike under both: no crossover.
    same = bench.probe_numbers({"movie-sentiment": under_sentiment, "movie": under_sentiment},
                               {"sentiment": sentiment, "movie": movie}, k=1)
    assert bench.crossovers(same) == {"crossover_sentiment": 0.0, "crossover_movie": 0.0}


def test_probes_encode_each_text_under_each_tasks_instruction(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.models.encoder import Encoder, EncoderSpec
    from trainer.models.prompts import PromptSpec

    words = [f"w{i} w{i + 1} w{i + 2}" for i in range(12)]
    write_jsonl(tmp_path / "probe_reviews.jsonl", [{"text": t, "sentiment": i % 2, "movie": i % 3}
                                                   for i, t in enumerate(words)])
    write_jsonl(tmp_path / "news_outlet_clustering.jsonl", [{"text": t, "label": i % 4} for i, t in enumerate(words)])
    prompts = PromptSpec(instruction_template="I: {instruction} Q: {text}",
                         instructions={t: f"w{40 + n} w{50 + n}" for n, t in
                                       enumerate(["movie-sentiment", "movie", "news-outlet", "news"])})
    spec = EncoderSpec(max_length_query=16, prompts=prompts, exclude_prompt_from_pooling=True)
    encoder = bench.load_with_templates(str(tiny_model), prompts, spec)
    numbers = bench.run_probes(encoder, tmp_path, k=3, limit=None, batch_size=8)
    assert set(numbers) == {f"agreement/{label}/under/{task}" for label, task in
                            [("sentiment", "movie-sentiment"), ("movie", "movie-sentiment"), ("sentiment", "movie"),
                             ("movie", "movie"), ("label", "news-outlet"), ("label", "news")]}
    assert all(0.0 <= v <= 1.0 for v in numbers.values())
    # The instruction changes the embeddings the probe reads.
    a = encoder.encode(words, "query", task="movie-sentiment")
    b = encoder.encode(words, "query", task="movie")
    assert not np.allclose(a, b)
    assert json.dumps(bench.crossovers(numbers))  # JSON-ready floats


def test_a_limited_probe_samples_across_the_label_grouped_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": f"t{i}", "label": "a" if i < 10 else "b"} for i in range(20)])
    rows = bench.read_rows(path, 6)
    assert rows == bench.read_rows(path, 6) and len(rows) == 6  # seeded
    assert {r["label"] for r in rows} == {"a", "b"}  # not the first six, which are all "a"
    assert len(bench.read_rows(path, None)) == 20


def test_report_paths_name_no_machine_folder(tmp_path: Path) -> None:
    # The results JSON is committed: a model inside the repository is named relative to it, also through a link
    # (a worktree's .venv pointing at another checkout's resolves outside, so the path as given is tried first).
    inside = bench.ROOT / "runs" / "some-run" / "checkpoints" / "step-000010"
    assert bench.relative_to_root(str(inside)) == "runs/some-run/checkpoints/step-000010"
    link = bench.ROOT / ".venv"
    if link.exists():
        assert not bench.relative_to_root(str(link / "lib")).startswith("/")
    outside = str(tmp_path / "model")
    assert bench.relative_to_root(outside) == outside

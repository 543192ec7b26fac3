"""The recipe-selection fold (bench/dev_fold.py) on a hand-made prepared-data folder.

    pytest tests/test_dev_fold.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import load_bench, write_jsonl


bench = load_bench("dev_fold")


def article(i: int) -> str:
    return f"article {i} " + " ".join(f"w{i}x{j}" for j in range(20))


@pytest.fixture
def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Six training headlines, each with its article and the two next articles as mined negatives; one dev query."""
    build = tmp_path / "build"
    news, distill = build / "news", build / "distill"
    write_jsonl(news / "articles.jsonl", [{"id": i, "text": article(i)} for i in range(8)])
    write_jsonl(news / "mined-teacher" / "train.jsonl", [
        {"query": f"headline {i}", "pos": [article(i)], "neg": [article(i + 1), article(i + 2)],
         "neg_scores": [0.5, 0.4]} for i in range(6)])
    windows = [{"text": " ".join(article(i).split()[:14])} for i in range(6)]
    write_jsonl(distill / "news_window.jsonl", windows)
    write_jsonl(distill / "news_headline.jsonl", [{"text": f"headline {i}"} for i in range(6)])
    beir = news / "beir-full-dev"
    write_jsonl(beir / "queries.jsonl", [{"_id": "q0", "text": "dev headline"}])
    write_jsonl(beir / "corpus.jsonl", [{"_id": f"d{i}", "text": article(i)} for i in range(8)])
    (beir / "qrels").mkdir(parents=True)
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td7\t1\n")
    monkeypatch.setattr(bench, "BUILD", build)
    monkeypatch.setattr(bench, "NEWS", news)
    monkeypatch.setattr(bench, "DISTILL", distill)
    return tmp_path


def test_fold_queries_are_unseen_and_overrides_work_from_any_folder(prepared: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(prepared)
    summary = bench.build(Path("fold-out"), fold=2, seed=3)
    out = prepared / "fold-out"
    queries = [json.loads(line) for line in (out / "beir-full-devfold" / "queries.jsonl").read_text().splitlines()]
    held = {q["text"] for q in queries if q["_id"].startswith("fold")}
    assert len(held) == 2 and summary["queries"] == 3
    held_articles = {article(int(text.split()[1])) for text in held}

    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert all(row["query"] not in held for row in train)
    for row in train:  # a fold article is never a positive or a negative, and the scores follow the kept negatives
        assert not held_articles & set(row["pos"] + row["neg"])
        assert len(row["neg"]) == len(row["neg_scores"])
    unlabeled = (out / "distill" / "news_window.jsonl").read_text() + (out / "distill" / "news_headline.jsonl").read_text()
    assert not any(f'"{text}"' in unlabeled for text in held)
    assert not any(" ".join(text.split()[:12]) in unlabeled for text in held_articles)

    # The override names absolute paths: training may start in another folder than the one the fold was built in.
    overrides = yaml.safe_load((out / "conf" / "fold" / "on.yaml").read_text())
    paths = overrides["data"]["train_files"] + overrides["distill"]["unlabeled"]["files"]
    paths.append(overrides["eval"]["tasks"][0]["path"])
    assert all(Path(p).is_absolute() and Path(p).exists() for p in paths)


def test_out_inside_the_prepared_data_is_refused(prepared: Path) -> None:
    with pytest.raises(SystemExit, match="overlaps the prepared data"):
        bench.build(prepared / "build" / "news" / "fold", fold=2, seed=3)

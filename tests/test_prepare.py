"""Data preparation: held-out splits never leak into training, and news-full's relevant documents are held out."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "data"))
import news  # noqa: E402


def _articles(n: int) -> list[news.Article]:
    return [news.Article(id=str(i), title=f"title {i}", text=f"text of article {i}", outlet="x", date="")
            for i in range(n)]


def test_news_full_relevant_documents_are_the_splits_own_articles() -> None:
    articles = _articles(40)
    splits = news.split_articles(articles, seed=13, n_test=8, n_dev=5)
    train_docs = {f"d{a.id}" for a in splits["train"]}
    for name in ("dev", "test"):
        corpus, queries, qrels = news.beir_full_corpus(splits[name], articles)
        assert {c["_id"] for c in corpus} == {f"d{a.id}" for a in articles}  # every article is searched
        assert len(queries) == len(splits[name]) and len(qrels) == len(splits[name])
        relevant = {doc for _, doc, _ in qrels}
        assert relevant == {f"d{a.id}" for a in splits[name]}
        assert not relevant & train_docs  # training articles are distractors only


def test_prepared_news_full_has_no_training_article_among_relevant() -> None:
    folder = ROOT / "data" / "build" / "news"
    if not (folder / "beir-full-test").exists():
        pytest.skip("prepared data missing: python data/prepare.py news")
    train_texts = {json.loads(line)["pos"][0] for line in open(folder / "train.jsonl")}
    for split in ("dev", "test"):
        full = folder / f"beir-full-{split}"
        corpus = {r["_id"]: r["text"] for r in map(json.loads, open(full / "corpus.jsonl"))}
        rows = [line.split("\t") for line in open(full / "qrels" / "test.tsv").read().splitlines()[1:]]
        assert rows and all(corpus[doc] not in train_texts for _, doc, _ in rows)
        assert len(corpus) > 3000  # the whole prepared corpus, not the split's own articles

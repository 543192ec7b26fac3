"""Which bundled texts are held out for evaluation: one set of rules shared by every builder that makes training text.

    python data/prepare_eval.py        # evaluation tasks are built from the held-out side
    python data/prepare.py distill     # unlabeled distillation text: the training side only
    python data/prepare.py instruct    # multi-task instruction rows: the training side only

Rules (all deterministic for a seed, pure functions of the bundled files):

- news: the dev and test articles (``data/build/news/articles.jsonl`` ``split``) are held out; their headlines and
  texts never reach training.
- rotten tomatoes (reviews and plots): whole movies are held out for the probe and for clustering, so no review of
  those movies is trained on; plot summaries are held out as the corpus of review -> movie retrieval; every snippet
  of an evaluation file is held out.
- health tweets: one tweet in ``TWEET_HOLDOUT`` (by a seeded hash of its text) is held out for account
  classification (the test file and, from the same pool, the dev file).
- WordNet: the dev and test splits of ``data/build/wordnet`` (definitions never in two splits).

``HeldOut.blocks(text)`` says whether a text may not be trained on: the evaluation files' texts plus every
held-out document above, compared after whitespace and case normalisation.
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

PROBE_MOVIES = 40  # movies held out whole for the instruction-following probe (30+ snippets each)
TWEET_HOLDOUT = 5  # one tweet in five is held out (account classification)
URL = re.compile(r"https?://\S+")


def norm(text: str) -> str:
    """Whitespace collapsed, ends stripped."""
    return " ".join(text.split())


def key(text: str) -> str:
    """What two texts are compared by: whitespace- and case-insensitive."""
    return norm(text).casefold()


def rank(seed: int, name: str) -> str:
    """Deterministic pseudo-random sort key (stable when other items are added)."""
    return hashlib.sha256(f"{seed}:{name}".encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- rotten tomatoes

@dataclass(frozen=True)
class Snippet:
    text: str
    category: str  # fresh | rotten | plot
    movie: str


def read_rotten_tomatoes(path: Path) -> list[Snippet]:
    """Every non-empty, distinct snippet (first kept), whitespace-normalised."""
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    seen: set[str] = set()
    out = []
    for r in rows:
        text = norm(r.get("text") or "")
        if len(text) >= 10 and key(text) not in seen:
            seen.add(key(text))
            out.append(Snippet(text, r["category"], r["movie_name"]))
    return out


def reviews_by_movie(snippets: Iterable[Snippet]) -> dict[str, list[Snippet]]:
    by_movie: dict[str, list[Snippet]] = defaultdict(list)
    for s in snippets:
        if s.category != "plot":
            by_movie[s.movie].append(s)
    return by_movie


def probe_movies(snippets: list[Snippet], seed: int, exclude: set[str], n: int = PROBE_MOVIES,
                 min_reviews: int = 30) -> list[str]:
    """Movies held out whole for the probe: ``n`` movies with ``min_reviews``+ reviews and a plot, by seeded hash."""
    with_plot = {s.movie for s in snippets if s.category == "plot"}
    by_movie = reviews_by_movie(snippets)
    candidates = [m for m, rs in by_movie.items() if len(rs) >= min_reviews and m in with_plot and m not in exclude]
    return sorted(sorted(candidates, key=lambda m: rank(seed, f"probe:{m}"))[:n])


# ----------------------------------------------------------------------------- health tweets

@dataclass(frozen=True)
class Tweet:
    text: str
    account: str


def read_tweets(zip_path: Path) -> list[Tweet]:
    """Distinct tweets with URLs removed (a shared link would make the account trivially easy)."""
    with zipfile.ZipFile(zip_path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".csv"))
        raw = zf.read(name).decode("utf-8", errors="replace")
    seen: set[str] = set()
    out = []
    for r in csv.DictReader(io.StringIO(raw, newline="")):
        text = norm(URL.sub("", r.get("text") or ""))
        if len(text.split()) >= 4 and key(text) not in seen:
            seen.add(key(text))
            # source_id is "<account>-<tweet id>"
            out.append(Tweet(text, norm(r.get("source_id") or "").rsplit("-", 1)[0]))
    return out


def tweet_held_out(tweet: Tweet, seed: int) -> bool:
    return int(rank(seed, f"tweet:{tweet.text}")[:8], 16) % TWEET_HOLDOUT == 0


# ----------------------------------------------------------------------------- the block list

@dataclass
class HeldOut:
    """Texts that may not be trained on (normalised keys) and held-out movies."""
    keys: set[str] = field(default_factory=set)
    movies: set[str] = field(default_factory=set)

    def add(self, texts: Iterable[str]) -> None:
        self.keys.update(key(t) for t in texts)

    def blocks(self, text: str) -> bool:
        return key(text) in self.keys


def eval_file_texts(eval_dir: Path) -> list[str]:
    """Every text of every evaluation task file and BEIR folder under ``eval_dir``."""
    texts: list[str] = []
    for path in sorted(eval_dir.rglob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    texts += list(_texts_of(json.loads(line)))
    return texts


def _texts_of(row: dict[str, Any]) -> Iterable[str]:
    for name in ("text", "sentence1", "sentence2", "query", "title"):
        if isinstance(row.get(name), str):
            yield row[name]
    for name in ("positive", "negative"):
        for text in row.get(name) or []:
            yield text


def build_held_out(build: Path, snippets: list[Snippet], tweets: list[Tweet], seed: int) -> HeldOut:
    """Everything an evaluation reads: eval files, dev/test articles and WordNet splits, held-out movies, plots and
    tweets. Needs ``data/build/news``, ``data/build/eval`` (and ``data/build/wordnet`` when it was built)."""
    held = HeldOut()
    held.add(eval_file_texts(build / "eval"))
    with open(build / "news" / "articles.jsonl", encoding="utf-8") as handle:
        for article in map(json.loads, handle):
            if article["split"] != "train":
                held.add([article["title"], article["text"]])
    for split in ("dev", "test"):
        path = build / "wordnet" / f"{split}.jsonl"
        if path.exists():
            with open(path, encoding="utf-8") as handle:
                for row in map(json.loads, handle):
                    held.add([row["query"], *row["pos"]])
    clustering = build / "eval" / "rt_movie_clustering.jsonl"
    clustered = {key(json.loads(line)["text"]) for line in open(clustering, encoding="utf-8")} if clustering.exists() else set()
    held.movies = {s.movie for s in snippets if key(s.text) in clustered}
    held.movies |= set(probe_movies(snippets, seed, held.movies))
    held.add(s.text for s in snippets if s.movie in held.movies or s.category == "plot")
    held.add(t.text for t in tweets if tweet_held_out(t, seed))
    return held

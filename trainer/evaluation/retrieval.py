"""Retrieval evaluation on a BEIR-layout folder: nDCG@10, MRR@10, Recall@1/10/100, MAP@100.

    python -m trainer.evaluate checkpoint=runs/demo/checkpoints/final eval=news

Folder layout (BEIR): ``corpus.jsonl`` ({"_id", "title", "text"}), ``queries.jsonl`` ({"_id", "text"}),
``qrels/<split>.tsv`` (query-id, corpus-id, score; header line). Search is exact inner product with faiss,
queries in chunks, so no full query x corpus matrix is held in memory. nDCG uses linear gains (the graded
relevance itself), as trec_eval / pytrec_eval and therefore BEIR and MTEB do.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from trainer.models.encoder import Encoder


@dataclass
class RetrievalData:
    corpus_ids: list[str]
    corpus: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_no}: row: invalid JSON: {err.msg}") from None
    return rows


def load_beir(folder: str | Path, split: str = "test", max_queries: Optional[int] = None) -> RetrievalData:
    folder = Path(folder)
    for need in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / need).exists():
            raise FileNotFoundError(f"{folder / need}: missing (BEIR layout: corpus.jsonl, queries.jsonl, qrels/)")
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for line_no, row in enumerate(reader, start=1):
            if line_no == 1 and row and not row[-1].lstrip("-").isdigit():
                continue  # header
            if len(row) < 3:
                raise ValueError(f"{folder}/qrels/{split}.tsv:{line_no}: row: expected query-id, corpus-id, score")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    corpus_rows = _read_jsonl(folder / "corpus.jsonl")
    corpus_ids = [str(r["_id"]) for r in corpus_rows]
    # BEIR convention: title and text joined by a space when a title is present.
    corpus = [(r.get("title", "") + " " + r["text"]).strip() if r.get("title") else r["text"] for r in corpus_rows]
    query_rows = [r for r in _read_jsonl(folder / "queries.jsonl") if str(r["_id"]) in qrels]
    if max_queries is not None:
        query_rows = query_rows[:max_queries]
    return RetrievalData(corpus_ids, corpus, [str(r["_id"]) for r in query_rows],
                         [r["text"] for r in query_rows], qrels)


def search(query_emb: np.ndarray, corpus_emb: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: (Q, k) scores and corpus indices, queries searched ``chunk`` at a time."""
    from trainer.mining.index import build_index, search as search_index

    return search_index(build_index(corpus_emb), query_emb, k, chunk)


def retrieval_metrics(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean over queries of nDCG@10, MRR@10, Recall@1/10/100, MAP@100 (relevance > 0 counts as relevant)."""
    totals = {"ndcg_at_10": 0.0, "mrr_at_10": 0.0, "recall_at_1": 0.0, "recall_at_10": 0.0,
              "recall_at_100": 0.0, "map_at_100": 0.0}
    for qid, docs in ranked.items():
        rels = qrels.get(qid, {})
        relevant = {d for d, r in rels.items() if r > 0}
        if not relevant:
            continue
        dcg = sum(max(rels.get(d, 0), 0) / math.log2(r + 2) for r, d in enumerate(docs[:10]))
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        totals["ndcg_at_10"] += dcg / idcg
        first = next((r for r, d in enumerate(docs[:10]) if d in relevant), None)
        totals["mrr_at_10"] += 0.0 if first is None else 1.0 / (first + 1)
        for k in (1, 10, 100):
            totals[f"recall_at_{k}"] += len(relevant & set(docs[:k])) / len(relevant)
        hits, precision_sum = 0, 0.0
        for r, d in enumerate(docs[:100]):
            if d in relevant:
                hits += 1
                precision_sum += hits / (r + 1)
        totals["map_at_100"] += precision_sum / min(len(relevant), 100)
    n = sum(1 for q in ranked if any(r > 0 for r in qrels.get(q, {}).values()))
    return {k: v / max(n, 1) for k, v in totals.items()}


def evaluate_retrieval(encoder: Encoder, data: RetrievalData, batch_size: int = 64, task: Optional[str] = None,
                       top_k: int = 100, embed: Optional[Callable[[list[str], str], np.ndarray]] = None,
                       ) -> dict[str, float]:
    """Encode with the encoder's own prompts (queries as ``query`` side, documents as ``passage``), search, score.

    ``embed(texts, side) -> (N, D)`` replaces ``encoder.encode`` (the evaluation runner passes a cached encoder).
    """
    if embed is None:
        def embed(texts: list[str], side: str) -> np.ndarray:
            return encoder.encode(texts, side=side, batch_size=batch_size, task=task if side == "query" else None)
    query_emb = embed(data.queries, "query")  # (Q, D)
    corpus_emb = embed(data.corpus, "passage")  # (N, D)
    _, ids = search(query_emb, corpus_emb, top_k)  # (Q, k)
    ranked = {qid: [data.corpus_ids[j] for j in row if j >= 0] for qid, row in zip(data.query_ids, ids)}
    return retrieval_metrics(ranked, data.qrels)

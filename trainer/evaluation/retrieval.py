"""Retrieval evaluation on a BEIR-layout folder: nDCG@10, MRR@10, Recall@1/10/100, MAP@100.

    python -m trainer.evaluate checkpoint=runs/demo/checkpoints/final eval=news

Folder layout (BEIR): ``corpus.jsonl`` ({"_id", "title", "text"}), ``queries.jsonl`` ({"_id", "text"}),
``qrels/<split>.tsv`` (query-id, corpus-id, score; header line). Search is exact inner product with faiss,
queries in chunks, so no full query x corpus matrix is held in memory. Every metric is trec_eval's (pytrec_eval,
and therefore BEIR and MTEB): nDCG with linear gains (the graded relevance itself), MAP@100 over all relevant
documents, and a judged query without a relevant document counts as 0 in the mean. A task may set BEIR's
``ignore_identical_ids`` (a document with the query's own id is never retrieved).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from trainer.io import read_jsonl, read_lines
from trainer.models.encoder import Encoder


@dataclass
class RetrievalData:
    corpus_ids: list[str]
    corpus: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}
    # BEIR's ``ignore_identical_ids`` (ArguAna, Quora...): a document whose id equals the query's id is never
    # retrieved; the top k is filled from the next documents.
    ignore_identical_ids: bool = False


def _read_texts(path: Path, with_title: bool) -> tuple[list[str], list[str]]:
    """(ids, texts) of a BEIR ``corpus.jsonl`` (title and text joined by a space when a title is present, the BEIR
    convention) or ``queries.jsonl``; a bad row stops with ``path:line: field: problem``."""
    ids, texts = [], []
    for line_no, row in read_jsonl(path):
        where = f"{path}:{line_no}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: row: expected a JSON object")
        for name, kinds, described in (("_id", (str, int), "a string or integer"), ("text", (str,), "a string")):
            if name not in row:
                raise ValueError(f"{where}: {name}: missing")
            if isinstance(row[name], bool) or not isinstance(row[name], kinds):
                raise ValueError(f"{where}: {name}: expected {described}, got {row[name]!r}")
        title = row.get("title") if with_title else None
        if title is not None and not isinstance(title, str):
            raise ValueError(f"{where}: title: expected a string, got {title!r}")
        ids.append(str(row["_id"]))
        texts.append((title + " " + row["text"]).strip() if title else row["text"])
    return ids, texts


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id -> {document id: relevance} from a tab-separated qrels file (a header line is skipped)."""
    qrels: dict[str, dict[str, int]] = {}
    for line_no, line in read_lines(path):
        row = line.split("\t")
        if line_no == 1 and not row[-1].strip().lstrip("-").isdigit():
            continue  # header
        if len(row) < 3:
            raise ValueError(f"{path}:{line_no}: row: expected query-id, corpus-id, score (tab-separated)")
        try:
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
        except ValueError:
            raise ValueError(f"{path}:{line_no}: score: expected an integer, got {row[2]!r}") from None
    return qrels


def load_beir(folder: str | Path, split: str = "test", max_queries: Optional[int] = None,
              ignore_identical_ids: bool = False) -> RetrievalData:
    """The judged queries of ``split`` (at most ``max_queries``), the corpus and the qrels of a BEIR folder."""
    folder = Path(folder)
    for need in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / need).exists():
            raise FileNotFoundError(f"{folder / need}: missing (BEIR layout: corpus.jsonl, queries.jsonl, qrels/)")
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv")
    corpus_ids, corpus = _read_texts(folder / "corpus.jsonl", with_title=True)
    query_ids, queries = _read_texts(folder / "queries.jsonl", with_title=False)
    judged = [i for i, qid in enumerate(query_ids) if qid in qrels][:max_queries]
    return RetrievalData(corpus_ids, corpus, [query_ids[i] for i in judged], [queries[i] for i in judged], qrels,
                         ignore_identical_ids)


def search(query_emb: np.ndarray, corpus_emb: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: (Q, k) scores and corpus indices, queries searched ``chunk`` at a time."""
    from trainer.mining.index import build_index, search as search_index

    return search_index(build_index(corpus_emb), query_emb, k, chunk)


METRICS = ("ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10", "recall_at_100", "map_at_100")


def query_metrics(docs: list[str], rels: dict[str, int]) -> dict[str, float]:
    """One query's metrics as trec_eval computes them (``docs`` in rank order; relevance > 0 is relevant).

    A judged query without a relevant document scores 0 everywhere; negative labels count as 0.
    """
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return dict.fromkeys(METRICS, 0.0)
    dcg = sum(max(rels.get(d, 0), 0) / math.log2(r + 2) for r, d in enumerate(docs[:10]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
    out = {"ndcg_at_10": dcg / sum(r / math.log2(i + 2) for i, r in enumerate(ideal))}
    first = next((r for r, d in enumerate(docs[:10]) if d in relevant), None)
    out["mrr_at_10"] = 0.0 if first is None else 1.0 / (first + 1)
    for k in (1, 10, 100):
        out[f"recall_at_{k}"] = len(relevant & set(docs[:k])) / len(relevant)
    hits, precision_sum = 0, 0.0
    for r, d in enumerate(docs[:100]):
        if d in relevant:
            hits += 1
            precision_sum += hits / (r + 1)
    out["map_at_100"] = precision_sum / len(relevant)  # trec_eval's map_cut: over every relevant document
    return out


def retrieval_metrics(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean over the judged queries (those in ``qrels``) of nDCG@10, MRR@10, Recall@1/10/100, MAP@100.

    Equal to pytrec_eval's ``ndcg_cut.10``, ``recip_rank`` (top 10), ``recall.1,10,100``, ``map_cut.100``
    averaged over the ranked queries it scores, as BEIR and MTEB report them.
    """
    per_query = [query_metrics(docs, qrels[qid]) for qid, docs in ranked.items() if qid in qrels]
    return {name: sum(m[name] for m in per_query) / max(len(per_query), 1) for name in METRICS}


def evaluate_retrieval(encoder: Encoder, data: RetrievalData, batch_size: int = 64, task: Optional[str] = None,
                       top_k: int = 100, embed: Optional[Callable[[list[str], str], np.ndarray]] = None,
                       ) -> dict[str, float]:
    """Encode with the encoder's own prompts (queries as ``query`` side, documents as ``passage``), search, score.

    ``embed(texts, side) -> (N, D)`` replaces ``encoder.encode`` (the evaluation runner passes a cached encoder).
    With ``data.ignore_identical_ids`` a document with the query's own id is left out of its top ``top_k``.
    """
    if embed is None:
        def embed(texts: list[str], side: str) -> np.ndarray:
            return encoder.encode(texts, side=side, batch_size=batch_size, task=task if side == "query" else None)
    query_emb = embed(data.queries, "query")  # (Q, D)
    corpus_emb = embed(data.corpus, "passage")  # (N, D)
    skip = data.ignore_identical_ids
    _, ids = search(query_emb, corpus_emb, top_k + int(skip))  # (Q, k + 1): room for the query's own id
    ranked = {}
    for qid, row in zip(data.query_ids, ids):
        docs = [data.corpus_ids[j] for j in row if j >= 0]
        ranked[qid] = [d for d in docs if not (skip and d == qid)][:top_k]
    return retrieval_metrics(ranked, data.qrels)


def matryoshka_retrieval(encoder: Any, data: Any, dims: Sequence[int], batch_size: int = 64,
                         task: Optional[str] = None) -> dict[str, float]:
    """Retrieval metrics at each truncated dimension ``{"dim64/ndcg_at_10": ...}``; texts are encoded once."""
    cache: dict[str, np.ndarray] = {}

    def full(texts: list[str], side: str) -> np.ndarray:
        if side not in cache:
            cache[side] = encoder.encode(texts, side=side, batch_size=batch_size,
                                         task=task if side == "query" else None)
        return cache[side]

    results: dict[str, float] = {}
    for dim in sorted({int(d) for d in dims}):
        def embed(texts: list[str], side: str, dim: int = dim) -> np.ndarray:
            cut = full(texts, side)[:, :dim]
            return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)

        if dim < encoder.dim:
            scores = evaluate_retrieval(encoder, data, batch_size, task=task, embed=embed)
            results.update({f"dim{dim}/{k}": v for k, v in scores.items()})
    return results

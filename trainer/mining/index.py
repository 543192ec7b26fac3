"""FAISS indexes over corpus embeddings and chunked top-k search (never a full queries x corpus matrix).

    python -c "import numpy as np; from trainer.mining.index import build_index, search; \
               x = np.eye(4, dtype='float32'); print(search(build_index(x), x, 2))"

``flat`` is exact inner product (cosine for normalised embeddings). ``ivf`` clusters the corpus and visits
``nprobe`` clusters per query; ``hnsw`` walks a graph. Both are approximate: ``recall_against_exact`` measures
what they miss on a sample of the queries. ``auto`` (``resolve_index``) is exact up to ``exact_max_passages``
passages and ``approximate`` beyond. With faiss-gpu installed (and ``use_gpu`` auto/always) flat and ivf indexes
move to every GPU.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Optional

import faiss
import numpy as np

from trainer.mining.config import IndexConfig

log = logging.getLogger(__name__)
GPU_MAX_K = 2048  # faiss GPU search returns at most this many neighbours per query


def _gpus(cfg: IndexConfig) -> int:
    n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if cfg.use_gpu == "always" and n == 0:
        raise RuntimeError("index.use_gpu=always but faiss sees no GPU (install faiss-gpu, or use auto/never)")
    if cfg.use_gpu not in ("auto", "always", "never"):
        raise ValueError(f"index.use_gpu must be auto, always or never, got {cfg.use_gpu!r}")
    return 0 if cfg.use_gpu == "never" or cfg.kind == "hnsw" else n


APPROXIMATE = ("ivf", "hnsw")


def resolve_index(cfg: IndexConfig, passages: int) -> IndexConfig:
    """``kind=auto`` made concrete for a corpus of ``passages``: ``flat`` up to ``exact_max_passages``, else
    ``approximate``; any other kind is returned as it is."""
    if cfg.kind != "auto":
        return cfg
    if cfg.approximate not in APPROXIMATE:
        raise ValueError(f"index.approximate must be one of {', '.join(APPROXIMATE)}, got {cfg.approximate!r}")
    kind = "flat" if passages <= cfg.exact_max_passages else cfg.approximate
    log.info("index=auto: %s for %d passages (exact up to %d)", kind, passages, cfg.exact_max_passages)
    return replace(cfg, kind=kind)


def recall_against_exact(corpus: np.ndarray, queries: np.ndarray, ids: np.ndarray, sample: int,
                         seed: int = 0) -> tuple[float, int]:
    """Mean share of each sampled query's exact top-k (k = ``ids.shape[1]``) that the approximate ``ids`` (Q, k)
    found, and the number of queries sampled. Exact search runs on the sample only (sample x C products)."""
    k = ids.shape[1]
    rows = np.arange(len(queries))
    if sample < len(queries):
        rows = np.sort(np.random.default_rng(seed).choice(len(queries), size=max(1, sample), replace=False))
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    _, exact = faiss.knn(np.ascontiguousarray(queries[rows], dtype=np.float32), corpus, k,
                         metric=faiss.METRIC_INNER_PRODUCT)  # (S, k)
    found = [len(set(e[e >= 0].tolist()) & set(a.tolist())) / max(1, int((e >= 0).sum()))
             for e, a in zip(exact, ids[rows])]
    return float(np.mean(found)), len(rows)


def index_summary(requested: str, cfg: IndexConfig, passages: int, k: int, recall: Optional[float],
                  sampled: int) -> dict[str, Any]:
    """The ``index`` block of report.json: the kind asked for and used, and the recall@k expected of it."""
    if cfg.kind == "flat":
        how = "exact search: the true top-k by construction"
    elif recall is None:
        how = "not measured: a stored search result from before recall was recorded"
    else:
        how = f"measured: share of the exact top-{k} found, over {sampled} sampled queries searched exactly too"
    summary: dict[str, Any] = {"requested": requested, "kind": cfg.kind, "passages": passages, "k": k,
                               "expected_recall_at_k": recall, "recall_how": how}
    if requested == "auto":
        summary["exact_max_passages"] = cfg.exact_max_passages
    if cfg.kind == "ivf":
        summary["settings"] = {"nlist": cfg.nlist, "nprobe": cfg.nprobe}
    elif cfg.kind == "hnsw":
        summary["settings"] = {"hnsw_m": cfg.hnsw_m, "ef_search": cfg.ef_search}
    if recall is not None and recall < 0.95:
        log.warning("%s index: expected recall@%d %.3f against exact search: raise nprobe / ef_search, or use "
                    "index=flat", cfg.kind, k, recall)
    return summary


def build_index(corpus: np.ndarray, cfg: Optional[IndexConfig] = None) -> Any:
    """An inner-product index over ``corpus`` (C, D) float32."""
    cfg = cfg or IndexConfig()
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    if corpus.ndim != 2 or not len(corpus):
        raise ValueError(f"cannot index an empty corpus (embeddings of shape {corpus.shape})")
    n, dim = corpus.shape
    if cfg.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif cfg.kind == "ivf":
        nlist = max(1, min(cfg.nlist, n // 39))  # faiss wants >= 39 training points per cluster
        if nlist < cfg.nlist:
            log.info("ivf: nlist %d -> %d for %d passages", cfg.nlist, nlist, n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = cfg.seed
        index.train(corpus)
        index.nprobe = min(cfg.nprobe, nlist)
    elif cfg.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.hnsw.efSearch = cfg.ef_search
    else:
        raise ValueError(f"index.kind must be flat, ivf, hnsw or auto, got {cfg.kind!r}")
    if _gpus(cfg):
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(corpus)
    return index


def search(index: Any, queries: np.ndarray, k: int, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores (Q, k) float32 descending, ids (Q, k) int64; -1 where fewer), ``batch`` queries at a time."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(k, index.ntotal))
    if type(index).__name__.startswith(("Gpu", "IndexReplicas", "IndexShards")):
        k = min(k, GPU_MAX_K)
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch):
        s, i = index.search(queries[start:start + batch], k)  # (b, k) each
        scores[start:start + batch], ids[start:start + batch] = s, i
    return scores, ids

"""FAISS indexes over corpus embeddings and chunked top-k search (never a full queries x corpus matrix).

    python -c "import numpy as np; from trainer.mining.index import build_index, search; \
               x = np.eye(4, dtype='float32'); print(search(build_index(x), x, 2))"

``flat`` is exact inner product (cosine for normalised embeddings). ``ivf`` clusters the corpus and visits
``nprobe`` clusters per query; ``hnsw`` walks a graph. Both are approximate: check recall on clustered data.
With faiss-gpu installed (and ``use_gpu`` auto/always) flat and ivf indexes move to every GPU.
"""
from __future__ import annotations

import logging
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
        raise ValueError(f"index.kind must be flat, ivf or hnsw, got {cfg.kind!r}")
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

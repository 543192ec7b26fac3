"""Typed settings of the mining stage (``python -m trainer.mine``), registered as ``mine_schema``.

    python -m trainer.mine --cfg job        # print the composed, validated mining config
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from trainer.config import ModelConfig, register_configs


@dataclass
class IndexConfig:
    kind: str = "flat"  # flat (exact inner product) | ivf | hnsw (approximate, for large corpora) | auto
    exact_max_passages: int = 500_000  # auto: exact up to this many passages, ``approximate`` beyond
    approximate: str = "hnsw"  # auto: the approximate kind for larger corpora (ivf | hnsw; hnsw keeps recall 0.95 at 1M)
    recall_sample: int = 1000  # approximate kinds: queries searched exactly too, for the recall in report.json
    nlist: int = 1024  # ivf: clusters; clamped so every cluster has >= 39 training points
    nprobe: int = 16  # ivf: clusters visited per query (higher = better recall, slower)
    hnsw_m: int = 32  # hnsw: links per node
    ef_construction: int = 200  # hnsw: build-time beam
    ef_search: int = 128  # hnsw: search-time beam (higher = better recall, slower)
    use_gpu: str = "auto"  # auto (GPU when faiss has one) | never | always
    search_batch: int = 1024  # queries per search call: memory is search_batch x k, never Q x C
    seed: int = 0


@dataclass
class SelectConfig:
    num_negatives: int = 7  # negatives written per query
    skip_top: int = 0  # rank window: skip the r best candidates (after removing positives and duplicates)
    max_rank: int = 50  # rank window: take candidates up to rank R
    margin: Optional[float] = None  # absolute: keep neg < pos - margin
    relative: Optional[float] = 0.95  # TopK-PercPos (NV-Retriever): keep neg < p * pos (sign-safe: pos - |pos|(1-p))
    max_score: Optional[float] = None  # keep neg <= max_score
    sampling: str = "top"  # top (best surviving candidates) | random (uniform inside the surviving window)
    seed: int = 0  # random sampling draws from rng(seed, query index)
    exclude_query_text: bool = True  # a passage identical to the query is never a negative


@dataclass
class TeacherFilterConfig:
    """How the teacher (``teacher``: a conf/teacher/<kind>.yaml, the same configs training uses) filters candidates."""
    margin: float = 0.05  # drop a candidate the teacher scores >= its positive's teacher score - margin
    max_candidates: Optional[int] = None  # rescore at most this many survivors per query (None = all)


@dataclass
class MineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)  # the miner: base student, checkpoint or teacher
    input_files: List[str] = MISSING  # training JSONL (queries with positives)
    corpus_file: Optional[str] = None  # JSONL {id, text}; None = every passage (pos and neg) in the input
    out_dir: str = MISSING  # writes train.jsonl, report.json, scores.png
    cache_dir: Optional[str] = ".cache/embeddings"  # None = no embedding cache
    batch_size: int = 64  # encoding batch
    precision: str = "fast"  # fast: bf16 where native (CUDA, AVX512-BF16/AMX CPUs) | auto | float32 | bfloat16
    encode_chunk: int = 4096  # texts encoded (and cached) per chunk: a killed run resumes at chunk granularity
    max_rows: Optional[int] = None
    on_error: str = "raise"  # raise | skip bad input rows (counted in the report)
    drop_rows_without_negatives: bool = False  # True: leave them out of train.jsonl (counted in the report)
    keep_existing_negatives: bool = False  # append mined negatives to the row's own instead of replacing them
    num_threads: Optional[int] = None
    histogram: bool = True
    index: IndexConfig = field(default_factory=IndexConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    # The false-negative filter's teacher: a node of the training ``teacher`` group (conf/teacher/<kind>.yaml,
    # checked against its kind's schema, built by instantiate), so mining and distillation share one teacher and its
    # embedding cache. None: no filter.
    teacher: Optional[Any] = None
    teacher_filter: TeacherFilterConfig = field(default_factory=TeacherFilterConfig)
    paths: Dict[str, str] = field(default_factory=dict)


def register_mine_configs() -> None:
    """Register ``mine_schema`` (plus the training schemas and the ``asset`` resolver); idempotent."""
    register_configs()
    ConfigStore.instance().store(name="mine_schema", node=MineConfig)

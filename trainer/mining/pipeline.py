"""The mining stage: encode (cached) -> index -> search in chunks -> selection rules -> teacher filter -> write.

    python -m trainer.mine input_files='[data/build/news/train.jsonl]' out_dir=data/build/news/mined

``mine_negatives`` is the reusable core (also used for re-mining during training); ``run`` adds loading,
the output JSONL in the training schema, ``report.json`` and ``scores.png``.

With a cache folder, the search result itself is kept too (``trainer.mining.candidates``), so re-running the
selection with other rules costs neither encoding nor search.
"""
from __future__ import annotations

import gc
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from trainer.data.dataset import load_examples
from trainer.data.schema import DataError, Example
from trainer.distributed import world
from trainer.encoding import EmbeddingCache, encode_cached, save_npz_atomic, text_keys
from trainer.io import read_jsonl
from trainer.mining.candidates import ExampleKeys, candidates_key, load_candidates
from trainer.mining.config import IndexConfig, SelectConfig, TeacherFilterConfig
from trainer.mining.index import build_index, index_summary, recall_against_exact, resolve_index, search
from trainer.mining.report import atomic_write_text, jsonl_lines, score_summary, write_histogram, write_report
from trainer.mining.select import RULES, candidate_mask, mask_columns, sample, sample_top
from trainer.mining.teacher import build_teacher, teacher_cache_keys, teacher_filter
from trainer.models.encoder import METADATA_FILE, Encoder
from trainer.runtime import setup_processes

log = logging.getLogger(__name__)


@dataclass
class MineResult:
    negatives: list[list[str]]  # per query, the selected negative texts in rank order
    neg_scores: list[list[float]]  # miner scores of those
    pos_scores: np.ndarray  # (Q,) miner score of each query's weakest positive
    teacher_pos: Optional[list[list[float]]] = None  # teacher scores of every positive
    teacher_neg: Optional[list[list[float]]] = None  # teacher scores of the selected negatives
    counts: Counter = field(default_factory=Counter)
    cache_keys: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)  # kind used and its expected recall (report.json)


def load_corpus(path: str | Path) -> list[str]:
    """Texts of a JSONL corpus ``{"id": ..., "text": ...}``; a bad line stops with ``path:line: field: problem``."""
    texts = []
    for line_no, row in read_jsonl(path, DataError):
        where = f"{path}:{line_no}"
        if not isinstance(row, dict) or "text" not in row:
            raise DataError(f"{where}: text: missing")
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise DataError(f"{where}: text: must be a non-empty string")
        texts.append(row["text"])
    if not texts:
        raise ValueError(f"{path}: the corpus is empty")
    return texts


def default_corpus(examples: Sequence[Example]) -> list[str]:
    """Every distinct passage (positives and negatives) of the data, first occurrence first."""
    return list(dict.fromkeys(t for ex in examples for t in (*ex.pos, *ex.neg)))


def query_tasks(examples: Sequence[Example]) -> list[Optional[str]]:
    return list(dict.fromkeys(ex.task for ex in examples))


def encode_queries(encoder: Encoder, examples: Sequence[Example], cache_root: Optional[str | Path],
                   batch_size: int, chunk: int, precision: str = "auto") -> np.ndarray:
    """(Q, D) query embeddings with each row's task instruction (or own instruction), one cache per task."""
    out = np.zeros((len(examples), encoder.dim), dtype=np.float32)
    for task in query_tasks(examples):
        rows = [i for i, ex in enumerate(examples) if ex.task == task]
        out[rows] = encode_cached(encoder, [examples[i].query for i in rows], "query", cache_root=cache_root,
                                  task=task, batch_size=batch_size, chunk_size=chunk, precision=precision,
                                  instructions=[examples[i].instruction for i in rows])
    return out


def embedding_cache_keys(encoder: Encoder, examples: Sequence[Example], cache_root: str | Path,
                         precision: str) -> dict[str, str]:
    keys = {"corpus": EmbeddingCache(cache_root, encoder, "passage", precision=precision).key}
    for task in query_tasks(examples):
        keys["query" + (f"_{task}" if task else "")] = EmbeddingCache(cache_root, encoder, "query", task,
                                                                       precision=precision).key
    return keys


def positive_scores(query_emb: np.ndarray, examples: Sequence[Example], corpus_tids: np.ndarray,
                    corpus_emb: np.ndarray, encode: Any) -> tuple[np.ndarray, int]:
    """(Q,) weakest-positive miner score; positives absent from the corpus are encoded (and counted)."""
    pos_texts = list(dict.fromkeys(t for ex in examples for t in ex.pos))
    tids = text_keys(pos_texts)
    order = np.argsort(corpus_tids)
    at = np.clip(np.searchsorted(corpus_tids, tids, sorter=order), 0, len(order) - 1)
    rows = order[at]
    present = corpus_tids[rows] == tids
    emb = np.zeros((len(pos_texts), corpus_emb.shape[1]), dtype=np.float32)
    emb[present] = corpus_emb[rows[present]]
    if not present.all():
        emb[~present] = encode([t for t, p in zip(pos_texts, present) if not p])
    where = {t: i for i, t in enumerate(pos_texts)}
    scores = np.array([min(float(query_emb[q] @ emb[where[t]]) for t in ex.pos) for q, ex in enumerate(examples)],
                      dtype=np.float32)
    absent = {t for t, p in zip(pos_texts, present) if not p}
    return scores, sum(1 for ex in examples for t in ex.pos if t in absent)


def mine_negatives(encoder: Encoder, examples: Sequence[Example], corpus: Sequence[str],
                   index_cfg: IndexConfig, select_cfg: SelectConfig, *, cache_root: Optional[str | Path] = None,
                   batch_size: int = 64, encode_chunk: int = 4096, teacher: Optional[Any] = None,
                   teacher_cfg: Optional[TeacherFilterConfig] = None, precision: str = "auto") -> MineResult:
    """Select negatives for every example from ``corpus``; the same result on every process."""
    if not corpus:
        raise ValueError("the corpus is empty: nothing to mine negatives from")
    if not examples:
        raise ValueError("no queries to mine negatives for")
    res = MineResult(negatives=[], neg_scores=[], pos_scores=np.zeros(0))
    clock = time.perf_counter()
    corpus = list(corpus)
    requested, index_cfg = index_cfg.kind, resolve_index(index_cfg, len(corpus))
    corpus_tids = text_keys(corpus)
    keys = ExampleKeys.of(examples)
    positives = keys.positives()  # of every row with the same query text: never a negative
    k = select_cfg.max_rank + positives.widest() + int(select_cfg.exclude_query_text)  # room for the excluded
    scores, ids, absent, recall, sampled, depth = _candidates(
        res, encoder, examples, corpus, corpus_tids, keys, index_cfg, k, clock, cache_root=cache_root,
        batch_size=batch_size, encode_chunk=encode_chunk, precision=precision)  # (Q, k) each
    res.index = index_summary(requested, index_cfg, len(corpus), depth, recall, sampled)
    if absent:
        res.counts["positives_not_in_corpus"] = absent
        log.warning("%d positives are not in the corpus (encoded separately; excluded by text as usual)", absent)

    clock = time.perf_counter()
    cand_tids = np.where(ids >= 0, corpus_tids[np.clip(ids, 0, None)], -1)  # (Q, k)
    res.counts["candidates"] = int(ids.size)
    alive = candidate_mask(cand_tids, scores, positives, keys.query, res.pos_scores, select_cfg,
                           res.counts)  # (Q, k)
    _pick_negatives(res, examples, corpus, ids, scores, alive, select_cfg, teacher, teacher_cfg)
    res.seconds["select"] = time.perf_counter() - clock
    return res


def _candidates(res: MineResult, encoder: Encoder, examples: Sequence[Example], corpus: list[str],
                corpus_tids: np.ndarray, keys: ExampleKeys, index_cfg: IndexConfig, k: int, clock: float, *,
                cache_root: Optional[str | Path], batch_size: int, encode_chunk: int, precision: str,
                ) -> tuple[np.ndarray, np.ndarray, int, Optional[float], int, int]:
    """The top ``k`` corpus rows of every query: (scores (Q, k), ids (Q, k), positives not in the corpus, recall
    against exact search, queries it was measured on, search depth), from the candidate cache when it holds them.
    Fills ``res``'s positive scores, cache keys, counts and timings."""
    cached, cand_path = None, None
    if cache_root is not None:
        res.cache_keys.update(embedding_cache_keys(encoder, examples, cache_root, precision))
        res.cache_keys["candidates"] = candidates_key(res.cache_keys, examples, keys, corpus_tids, index_cfg)
        cand_path = Path(cache_root) / "candidates" / f"{res.cache_keys['candidates']}.npz"
        cached = load_candidates(cand_path, k)
    if cached is not None:
        scores, ids, res.pos_scores = cached["scores"], cached["ids"], cached["pos_scores"]
        absent = int(cached["absent"])
        recall = float(cached["recall"]) if "recall" in cached else None
        sampled = int(cached.get("recall_queries", 0))
        depth = int(cached.get("recall_k", ids.shape[1]))  # recall was measured at the stored search depth
        res.counts["candidates_cached"] = 1
        res.seconds["encode"] = time.perf_counter() - clock
    else:
        def encode_passages(texts: list[str]) -> np.ndarray:
            return encode_cached(encoder, texts, "passage", cache_root=cache_root, batch_size=batch_size,
                                 chunk_size=encode_chunk, precision=precision)

        corpus_emb = encode_passages(corpus)  # (C, D)
        query_emb = encode_queries(encoder, examples, cache_root, batch_size, encode_chunk, precision)  # (Q, D)
        res.pos_scores, absent = positive_scores(query_emb, examples, corpus_tids, corpus_emb, encode_passages)
        res.seconds["encode"] = time.perf_counter() - clock

        clock = time.perf_counter()
        index = build_index(corpus_emb, index_cfg)
        res.seconds["index"] = time.perf_counter() - clock
        clock = time.perf_counter()
        scores, ids = search(index, query_emb, k, index_cfg.search_batch)  # (Q, k) each
        del index
        res.seconds["search"] = time.perf_counter() - clock
        recall, sampled, depth = 1.0, 0, int(ids.shape[1])  # exact
        if index_cfg.kind != "flat":
            clock = time.perf_counter()
            recall, sampled = recall_against_exact(corpus_emb, query_emb, ids, index_cfg.recall_sample,
                                                   index_cfg.seed)
            res.seconds["recall_check"] = time.perf_counter() - clock
        if cand_path is not None and world()[0] == 0:
            save_npz_atomic(cand_path, scores=scores, ids=ids, pos_scores=res.pos_scores, absent=np.int64(absent),
                            k=np.int64(k), recall=np.float64(recall), recall_queries=np.int64(sampled),
                            recall_k=np.int64(depth))
    return scores, ids, absent, recall, sampled, depth


def _pick_negatives(res: MineResult, examples: Sequence[Example], corpus: list[str], ids: np.ndarray,
                    scores: np.ndarray, alive: np.ndarray, select_cfg: SelectConfig, teacher: Optional[Any],
                    teacher_cfg: Optional[TeacherFilterConfig]) -> None:
    """Sample each query's negatives among its candidates that survived the rules (``alive`` (Q, k)); with a
    teacher, among those the teacher's filter keeps. Sets ``res.negatives``, ``neg_scores`` (and teacher scores)."""
    queries = np.arange(len(examples))
    if teacher is None:
        if select_cfg.sampling == "top":
            picks = mask_columns(sample_top(alive, select_cfg.num_negatives, res.counts))  # columns of ids/scores
        else:
            picks = sample(mask_columns(alive), select_cfg, queries, res.counts)
        res.negatives = [[corpus[i] for i in row[cols].tolist()] for row, cols in zip(ids, picks)]
        res.neg_scores = [row[cols].tolist() for row, cols in zip(scores, picks)]
    else:
        survivors = mask_columns(alive)
        t0 = time.perf_counter()
        texts = [[corpus[i] for i in row[cols].tolist()] for row, cols in zip(ids, survivors)]
        miner = [row[cols].tolist() for row, cols in zip(scores, survivors)]
        before = texts
        texts, teacher_scores, res.teacher_pos = teacher_filter(
            teacher, [ex.query for ex in examples], [ex.pos for ex in examples], texts,
            teacher_cfg or TeacherFilterConfig(), res.counts)
        miner = [[m[b.index(t)] for t in kept] for m, b, kept in zip(miner, before, texts)]
        res.cache_keys.update(teacher_cache_keys(teacher))
        res.seconds["teacher"] = time.perf_counter() - t0
        picks = sample([list(range(len(t))) for t in texts], select_cfg, queries, res.counts)
        res.negatives = [[t[i] for i in p] for t, p in zip(texts, picks)]
        res.neg_scores = [[m[i] for i in p] for m, p in zip(miner, picks)]
        res.teacher_neg = [[s[i] for i in p] for s, p in zip(teacher_scores, picks)]


def load_miner(model_cfg: Any) -> Encoder:
    """Our checkpoints carry their own prompts and pooling (embedstill.json); other models use ``model.*``."""
    path = Path(str(model_cfg.name_or_path))
    if (path / METADATA_FILE).exists():
        return Encoder.from_pretrained(str(path), dtype=model_cfg.get("dtype", "float32"))
    return Encoder.from_config(model_cfg)


def query_positives(examples: Sequence[Example]) -> dict[str, set[str]]:
    """Query text -> the positives of every example with that text."""
    shared: dict[str, set[str]] = {}
    for ex in examples:
        shared.setdefault(ex.query, set()).update(ex.pos)
    return shared


def output_rows(examples: Sequence[Example], res: MineResult, keep_existing: bool) -> list[dict[str, Any]]:
    """Training rows: mined negatives replace the row's own, or follow them (``keep_existing``). A kept negative that
    is a positive of another row with the same query text is dropped (counted in ``res.counts``)."""
    rows = []
    shared = query_positives(examples) if keep_existing else {}
    for q, ex in enumerate(examples):
        mined = [t for t in res.negatives[q] if not keep_existing or t not in ex.neg]
        kept = [t for t in ex.neg if t not in shared[ex.query]] if keep_existing else []
        if keep_existing and len(kept) < len(ex.neg):
            res.counts["existing_negatives_positive_elsewhere"] += len(ex.neg) - len(kept)
        neg = kept + mined
        row: dict[str, Any] = {"query": ex.query, "pos": list(ex.pos), "neg": neg}
        if ex.task is not None:
            row["task"] = ex.task
        if ex.instruction is not None:
            row["instruction"] = ex.instruction
        if res.teacher_neg is not None and res.teacher_pos is not None and not (keep_existing and ex.neg):
            row["pos_scores"], row["neg_scores"] = res.teacher_pos[q], res.teacher_neg[q]
        rows.append(row)
    return rows


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a bulk job.

    Mining holds hundreds of thousands of small lists and dicts (rows, negatives) that form no reference cycles;
    every automatic collection walks all of them again, which dominated a warm run's selection and writing time.
    Reference counting still frees everything; collection resumes when the job ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def rows_to_write(cfg: Any, examples: Sequence[Example], res: MineResult) -> list[dict[str, Any]]:
    """The output rows; raises when none is left (an empty train.jsonl would only fail later, in training)."""
    rows = output_rows(examples, res, cfg.keep_existing_negatives)
    if cfg.drop_rows_without_negatives:  # training with data.num_negatives > 0 needs a negative in every row
        kept = [r for r in rows if r["neg"]]
        res.counts["rows_dropped_without_negatives"] = len(rows) - len(kept)
        rows = kept
    if not rows:
        removed = {r: res.counts[r] for r in (*RULES, "teacher") if res.counts.get(r)}
        raise ValueError(f"{Path(cfg.out_dir) / 'train.jsonl'}: no rows to write: all {len(examples)} rows were "
                         "dropped by drop_rows_without_negatives=true (no negative survived the selection rules; "
                         f"removed: {removed}): loosen select.* or keep the rows")
    return rows


def refuse_overwriting_inputs(cfg: Any) -> None:
    """Stop before any work when an output (train.jsonl, report.json, scores.png) would replace an input file."""
    out = Path(cfg.out_dir)
    outputs = {p.resolve(): p for p in (out / "train.jsonl", out / "report.json", out / "scores.png")}
    for name in [*cfg.input_files, *([cfg.corpus_file] if cfg.corpus_file else [])]:
        clash = outputs.get(Path(name).resolve())
        if clash is not None:
            raise ValueError(f"{name}: this input would be overwritten by the output {clash}: give an out_dir that "
                             f"holds no input file (out_dir={cfg.out_dir})")


def run(cfg: Any) -> dict[str, Any]:
    """Mine as configured (a composed ``conf/mine.yaml``); writes the outputs and returns the report."""
    with collector_paused():
        return _run(cfg)


def _run(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    if cfg.num_threads:
        import torch

        torch.set_num_threads(cfg.num_threads)
    started = time.perf_counter()
    refuse_overwriting_inputs(cfg)
    device, main = setup_processes()
    examples, load_report = load_examples(list(cfg.input_files), on_error=cfg.on_error, max_rows=cfg.max_rows)
    corpus = load_corpus(cfg.corpus_file) if cfg.corpus_file else default_corpus(examples)
    encoder = load_miner(cfg.model).to(device)
    teacher = build_teacher(cfg.teacher)
    if teacher is not None:
        teacher.to(device)
    # Plain dataclasses from here on: the selection loop reads its settings often, DictConfig access is slow.
    index_cfg, select_cfg, teacher_cfg = (OmegaConf.to_object(c) for c in (cfg.index, cfg.select,
                                                                            cfg.teacher_filter))
    res = mine_negatives(encoder, examples, corpus, index_cfg, select_cfg, cache_root=cfg.cache_dir,
                         batch_size=cfg.batch_size, encode_chunk=cfg.encode_chunk, teacher=teacher,
                         teacher_cfg=teacher_cfg, precision=cfg.precision)
    out = Path(cfg.out_dir)
    rows = rows_to_write(cfg, examples, res)
    if main:  # every process computed the same result; one writes it
        atomic_write_text(out / "train.jsonl", jsonl_lines(rows))
    counts = dict(res.counts)
    report = {
        "output": str(out / "train.jsonl"), "queries": len(examples), "rows_written": len(rows),
        "corpus": len(corpus), "index": res.index,
        "input": load_report.summary(), "removed": {r: counts.get(r, 0) for r in (*RULES, "teacher",
                                                                                   "teacher_unscored")},
        "counts": counts, "cache_keys": res.cache_keys, "seconds": {**res.seconds,
                                                                   "total": time.perf_counter() - started},
        "miner_scores": {"positive": score_summary(res.pos_scores.tolist()),
                         "negative": score_summary([s for row in res.neg_scores for s in row])},
        "settings": OmegaConf.to_container(cfg, resolve=True),
    }
    if res.teacher_pos is not None and res.teacher_neg is not None:
        report["teacher_scores"] = {"positive": score_summary([s for r in res.teacher_pos for s in r]),
                                    "negative": score_summary([s for r in res.teacher_neg for s in r])}
    if counts.get("queries_short"):
        log.warning("%d of %d queries got fewer than %d negatives (see report.json)", counts["queries_short"],
                    len(examples), cfg.select.num_negatives)
    if not main:
        return report
    if cfg.histogram:
        panels = {"miner": (res.pos_scores.tolist(), [s for row in res.neg_scores for s in row])}
        if res.teacher_pos is not None and res.teacher_neg is not None:
            panels["teacher"] = ([s for r in res.teacher_pos for s in r], [s for r in res.teacher_neg for s in r])
        report["histogram"] = str(write_histogram(out / "scores.png", panels))
    write_report(out / "report.json", report)
    return report

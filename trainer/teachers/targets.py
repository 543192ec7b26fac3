"""Teacher targets: run the teacher once over the training texts, then annotate every batch from memory.

    python -m trainer.train experiment=distill          # builds these before the first step
    python -m trainer.teacher_cache experiment=distill      # only fill the teacher cache (e.g. before a sweep)

Before training, ``build_teacher_targets`` embeds every query and every passage of the training rows with the
teacher (bi-encoders: through the on-disk cache of ``trainer.encoding``, sharded over processes) or scores every
(query, passage) pair (cross-encoders: a pair-score cache file). The teacher is then dropped. During training the
collator looks rows up by ``index`` (example -> query row) and ``passage_ids`` (text id -> passage row), so epochs,
resumes and sweeps never run the teacher again. Batches gain:

    teacher_query   (B, D_t)        teacher embedding of each query
    teacher_passage (B*(1+k), D_t)  teacher embedding of each passage, query-major like ``passage``
    teacher_scores  (B, 1+k)        cross-encoder pair scores (precomputed teachers: already set by the data)
    teacher_bank    (N, D_t)        distill.teacher_bank: N of the teacher's passage embeddings (``draw_bank``)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from trainer.data.batch import Batch
from trainer.data.dataset import text_id
from trainer.data.schema import Example
from trainer.distributed import world
from trainer.encoding import save_npz_atomic
from trainer.teachers.precomputed import PrecomputedTeacher


def _row_lookup(sorted_ids: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    """Rows of ``ids`` in ``sorted_ids``; a miss means the batch holds a text the teacher never saw."""
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
    if not len(sorted_ids) or not (sorted_ids[pos] == ids).all():
        raise KeyError(f"{what}: a batch text has no teacher target (the targets were built from other data)")
    return pos


class TeacherTargets:
    """Teacher embeddings (or pair scores) of the training texts, held in memory."""

    def __init__(self, query_emb: Optional[np.ndarray] = None, passage_ids: Optional[np.ndarray] = None,
                 passage_emb: Optional[np.ndarray] = None, pair_keys: Optional[np.ndarray] = None,
                 pair_scores: Optional[np.ndarray] = None, query_ids: Optional[np.ndarray] = None,
                 covered: Optional[np.ndarray] = None) -> None:
        self.query_emb = query_emb  # (num_examples, D_t)
        self.passage_ids = passage_ids  # (M,) sorted text ids
        self.passage_emb = passage_emb  # (M, D_t)
        self.query_ids = query_ids  # (num_examples,) text id of each example's query (pair keys)
        self.pair_keys = pair_keys  # (P,) sorted
        self.pair_scores = pair_scores  # (P,)
        self.covered = covered  # (R,) example rows with targets (distill.tasks); None: every row
        self.teacher: Optional[Any] = None  # kept only to score new pairs (re-mining with a cross-encoder)
        self.cache_root: Optional[str] = None
        self.unlabeled: Optional[Any] = None  # UnlabeledTexts (trainer.teachers.unlabeled): distill.unlabeled
        self.bank_size = 0  # distill.teacher_bank: passages drawn from passage_emb per batch (0 = none)
        self.bank_seed = 0

    @property
    def dim(self) -> Optional[int]:
        return None if self.query_emb is None else int(self.query_emb.shape[1])

    def annotate(self, batch: Batch) -> Batch:
        index = batch.index.numpy()  # (B,)
        pids = batch.passage_ids.numpy()  # (B*(1+k),)
        if self.query_emb is not None and self.passage_emb is not None and self.passage_ids is not None:
            batch.teacher_query = torch.from_numpy(self.query_emb[index])  # (B, D_t)
            rows = _row_lookup(self.passage_ids, pids, "teacher passage embeddings")
            batch.teacher_passage = torch.from_numpy(self.passage_emb[rows])  # (B*(1+k), D_t)
            if self.bank_size:
                bank = self.draw_bank(index)
                batch.teacher_bank = torch.from_numpy(self.passage_emb[bank])  # (N, D_t)
                batch.teacher_bank_ids = torch.from_numpy(self.passage_ids[bank])  # (N,)
        if self.pair_keys is not None and self.pair_scores is not None and self.query_ids is not None:
            group = len(pids) // len(index)
            keys = pair_key(np.repeat(self.query_ids[index], group), pids)
            rows = _row_lookup(self.pair_keys, keys, "teacher pair scores")
            batch.teacher_scores = torch.from_numpy(self.pair_scores[rows].reshape(len(index), group))
        return batch

    def draw_bank(self, index: np.ndarray) -> np.ndarray:
        """(N,) sorted rows of ``passage_emb`` for the batch whose dataset rows are ``index``: every row when the
        bank holds at most ``bank_size``; otherwise a draw that depends only on the seed and the batch's rows, so
        a resumed run draws exactly what the uninterrupted run would."""
        total = len(self.passage_ids)
        if total <= self.bank_size:
            return np.arange(total)
        rng = np.random.default_rng([self.bank_seed, 11, *[int(i) for i in index]])
        return np.sort(rng.choice(total, size=self.bank_size, replace=False))

    def add_pair_scores(self, teacher: Any, examples: list[Example], cache_root: Optional[str]) -> int:
        """Score the (query, positive/negative) pairs of ``examples`` not scored yet; returns how many were new.

        Scores are looked up in, and added to, ``cache_root/pairs-<teacher fingerprint>.npz``.
        """
        query_ids = np.array([text_id(ex.query) for ex in examples], dtype=np.int64)
        pairs = {}
        for ex, qid in zip(examples, query_ids):
            for passage in (*ex.pos, *ex.neg):
                pairs[int(pair_key(np.array([qid]), np.array([text_id(passage)]))[0])] = (ex.query, passage)
        keys = np.array(sorted(pairs), dtype=np.int64)
        known = self.pair_keys if self.pair_keys is not None else np.zeros(0, dtype=np.int64)
        keys = keys[~np.isin(keys, known)]
        scores = np.full(len(keys), np.nan, dtype=np.float32)
        cache_file = None
        if cache_root is not None:
            cache_file = Path(cache_root) / f"pairs-{teacher.fingerprint()}.npz"
            cached = _read_pairs(cache_file)
            rows = np.clip(np.searchsorted(cached[0], keys), 0, max(len(cached[0]) - 1, 0))
            hit = cached[0][rows] == keys if len(cached[0]) else np.zeros(len(keys), bool)
            scores[hit] = cached[1][rows[hit]]
        todo = np.flatnonzero(np.isnan(scores))
        if len(todo):
            scores[todo] = teacher.score([pairs[int(keys[i])][0] for i in todo],
                                         [pairs[int(keys[i])][1] for i in todo])
            if cache_file is not None and world()[0] == 0:
                _write_pairs(cache_file, keys[todo], scores[todo])
        all_keys = np.concatenate([known, keys])
        order = np.argsort(all_keys, kind="stable")
        old_scores = self.pair_scores if self.pair_scores is not None else np.zeros(0, dtype=np.float32)
        self.pair_keys, self.pair_scores = all_keys[order], np.concatenate([old_scores, scores])[order]
        return len(keys)

    def rescore(self, examples: list[Example]) -> None:
        """After re-mining: the kept cross-encoder scores the new pairs (bi-encoder targets already cover the
        whole frozen corpus). With ``distill.tasks`` only the covered rows' pairs: no other batch reaches it."""
        if self.teacher is not None:
            chosen = examples if self.covered is None else [examples[i] for i in self.covered]
            self.add_pair_scores(self.teacher, chosen, self.cache_root)


def _read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys, scores) of a pair-score cache file; empty when absent."""
    if not path.exists():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    with np.load(path) as z:
        return z["keys"], z["scores"]


def _write_pairs(path: Path, keys: np.ndarray, scores: np.ndarray) -> None:
    """Merge new pair scores into the cache file (kept sorted; earlier entries stay)."""
    old_keys, old_scores = _read_pairs(path)
    fresh = ~np.isin(keys, old_keys)
    merged = np.concatenate([old_keys, keys[fresh]])
    order = np.argsort(merged, kind="stable")
    save_npz_atomic(path, keys=merged[order], scores=np.concatenate([old_scores, scores[fresh]])[order])


class TeacherCollator:
    """Wraps the data collator: ``Collator`` output plus the teacher's targets for the batch."""

    def __init__(self, base: Callable[[list[Any]], Batch], targets: TeacherTargets,
                 tasks: Optional[Sequence[str]] = None) -> None:
        self.base = base
        self.targets = targets
        self.tasks = None if tasks is None else frozenset(tasks)  # distill.tasks: batches the teacher scores

    def __call__(self, samples: list[Any]) -> Batch:
        batch = self.base(samples)
        if self.tasks is None or {s.task for s in samples} <= self.tasks:
            batch = self.targets.annotate(batch)
        else:
            batch.teacher_skipped = True  # distill.tasks leaves this batch's task to the contrastive loss
        if self.targets.unlabeled is not None:
            batch = self.targets.unlabeled.annotate(batch, self.base.tokenize)
        return batch


def pair_key(query_ids: np.ndarray, passage_ids: np.ndarray) -> np.ndarray:
    """(N,) int64 key of (query id, passage id) pairs (a mix of two 63-bit hashes; wraps around 2^64)."""
    with np.errstate(over="ignore"):
        mixed = query_ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ passage_ids.astype(np.uint64)
    return (mixed >> np.uint64(1)).astype(np.int64)


def _unique_passages(examples: list[Example]) -> tuple[np.ndarray, list[str]]:
    """Sorted unique text ids of every positive and negative, and their texts."""
    by_id = {text_id(t): t for ex in examples for t in (*ex.pos, *ex.neg)}
    ids = np.array(sorted(by_id), dtype=np.int64)
    return ids, [by_id[int(i)] for i in ids]


def embedding_targets(teacher: Any, examples: list[Example], rows: Optional[np.ndarray] = None) -> TeacherTargets:
    """Embed the query (with its task) and every unique passage of ``examples[rows]`` (default: all) once, through
    the teacher's cache. Rows left out keep a zero query embedding: their batches never reach the teacher."""
    rows = np.arange(len(examples)) if rows is None else rows
    chosen = [examples[i] for i in rows]
    embedded = teacher.embed([ex.query for ex in chosen], "query", [ex.task for ex in chosen])  # (R, D_t)
    query_emb = np.zeros((len(examples), embedded.shape[1]), dtype=embedded.dtype)  # (num_examples, D_t)
    query_emb[rows] = embedded
    ids, texts = _unique_passages(chosen)
    passage_emb = teacher.embed(texts, "passage")
    return TeacherTargets(query_emb=query_emb, passage_ids=ids, passage_emb=passage_emb, covered=rows)


def pair_score_targets(teacher: Any, examples: list[Example], cache_root: Optional[str],
                       rows: Optional[np.ndarray] = None) -> TeacherTargets:
    """Score every (query, positive/negative) pair of ``examples[rows]`` (default: all) once; scores cached in
    ``cache_root/pairs-<fingerprint>.npz``, keyed by the teacher's weights, tokenizer and max length (a reranker
    retrained in place gets new scores)."""
    query_ids = np.array([text_id(ex.query) for ex in examples], dtype=np.int64)
    rows = np.arange(len(examples)) if rows is None else rows
    targets = TeacherTargets(query_ids=query_ids, covered=rows)
    targets.add_pair_scores(teacher, [examples[i] for i in rows], cache_root)
    return targets


def teacher_rows(tasks: Optional[Sequence[str]], examples: list[Example]) -> Optional[np.ndarray]:
    """Rows whose task ``distill.tasks`` names (None: every row). The teacher embeds or scores only these: the
    collator never asks it about another task's batch."""
    if tasks is None:
        return None
    wanted = set(tasks)
    rows = np.array([i for i, ex in enumerate(examples) if ex.task in wanted], dtype=np.int64)
    if not len(rows):
        found = sorted({str(ex.task) for ex in examples})
        raise ValueError(f"distill.tasks={list(tasks)} names no task of the training rows (their tasks: {found})")
    return rows


def build_teacher_targets(cfg: DictConfig, examples: list[Example], device: Optional[torch.device] = None,
                          log: Callable[[str], None] = print, keep_teacher: bool = False) -> Optional[TeacherTargets]:
    """Targets for ``cfg.teacher`` over ``examples``; None when there is no teacher or it is precomputed.

    ``keep_teacher`` (re-mining): a pair-scoring teacher stays in memory to score the pairs re-mining creates.
    """
    from trainer.losses.registry import active_losses, distill_weights

    weights = distill_weights(cfg.get("distill"))
    if cfg.get("teacher") is None:
        if any(weights.values()):
            raise ValueError(f"distillation weights {weights} need a teacher: add teacher=mpnet (or "
                             "teacher=precomputed with pos_scores/neg_scores in the data)")
        return None
    teacher = hydra.utils.instantiate(cfg.teacher)
    embedding_losses = [n for n, e in active_losses(cfg.get("distill")).items() if e.needs_teacher_embeddings]
    if teacher.dim is None and embedding_losses:
        raise ValueError(f"teacher {teacher.name} scores pairs only: distill.{', distill.'.join(embedding_losses)} "
                         "need a bi-encoder teacher (teacher=mpnet)")
    if isinstance(teacher, PrecomputedTeacher):
        k = cfg.data.num_negatives
        missing = [i for i, ex in enumerate(examples) if ex.pos_scores is None or (k and ex.neg_scores is None)]
        if missing:
            raise ValueError(f"teacher=precomputed but {len(missing)} training rows lack pos_scores"
                             f"{'/neg_scores' if k else ''} (first: row {missing[0] + 1})")
        return None
    if device is not None:
        teacher.to(device)
    rows = teacher_rows((cfg.get("distill") or {}).get("tasks"), examples)
    scope = f"{len(examples)}" if rows is None else f"{len(rows)} of {len(examples)} (distill.tasks)"
    log(f"teacher {teacher.name}: computing targets for {scope} training rows (cached)")
    from trainer.teachers.unlabeled import build_unlabeled

    # First: it refuses a pair-scoring teacher before any pair is scored.
    unlabeled = build_unlabeled((cfg.get("distill") or {}).get("unlabeled"), teacher, cfg.train.seed, log)
    if teacher.dim is not None:
        targets = embedding_targets(teacher, examples, rows)
        if "teacher_bank" in active_losses(cfg.get("distill")):
            targets.bank_size, targets.bank_seed = int(cfg.distill.teacher_bank.bank_size), int(cfg.train.seed)
            log(f"distill.teacher_bank: {min(targets.bank_size, len(targets.passage_ids))} of the teacher's "
                f"{len(targets.passage_ids)} training passages per step")
    else:
        targets = pair_score_targets(teacher, examples, cfg.teacher.get("cache_root"), rows)
        if keep_teacher:
            targets.teacher, targets.cache_root = teacher, cfg.teacher.get("cache_root")
            log(f"teacher {teacher.name}: kept in memory to score the pairs re-mining creates")
    targets.unlabeled = unlabeled
    del teacher  # otherwise never used again: free its memory before the student trains
    return targets


def fill_teacher_cache(config: DictConfig) -> Optional[TeacherTargets]:
    """Read the training rows of ``config`` and build their teacher targets (filling the teacher's cache)."""
    from trainer.data.dataset import load_data_config

    rows, report = load_data_config(config.data)
    print(f"data: {report.summary()}")
    built = build_teacher_targets(config, rows)
    print("no teacher targets to build" if built is None else f"teacher targets ready: dim {built.dim}")
    return built

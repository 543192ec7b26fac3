"""False-negative filtering: a teacher rescores mined candidates; those scored near or above the positive go.

    python -m trainer.mine mine/teacher=mpnet ...          # bi-encoder teacher (embeddings cached on disk)
    python -m trainer.mine mine/teacher=cross_encoder teacher.name_or_path=PATH ...
    python -m trainer.mine teacher=mpnet teacher_filter.margin=0.1   # any conf/teacher/<kind>.yaml, as in training

The teachers are the ones training uses (``teacher``: conf/teacher/<kind>.yaml, the kind's schema, built by
``instantiate``; eval mode, no grad, ``score(queries, passages)`` for aligned pairs; the bi-encoder encodes each
unique text once through its embedding cache, the same ``runs/teacher-cache`` distillation reads). The scores of the kept
positives and negatives are written into the mined rows (``pos_scores`` / ``neg_scores``) so distillation never
runs the teacher on them again.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Optional, Sequence

import numpy as np

from trainer.encoding import EmbeddingCache
from trainer.mining.config import TeacherFilterConfig


def build_teacher(teacher_cfg: Any) -> Optional[Any]:
    """The teacher a ``teacher`` node describes (conf/teacher/<kind>.yaml, as training builds it); None for none."""
    if teacher_cfg is None:
        return None
    from hydra.utils import instantiate

    from trainer.teachers.kinds import is_kind

    if is_kind(teacher_cfg, "precomputed"):
        raise ValueError("teacher=precomputed cannot filter mined candidates: it reads scores from training rows and "
                         "scores no new pair; use teacher=mpnet (bi-encoder) or teacher=cross_encoder")

    return instantiate(teacher_cfg)


def teacher_cache_keys(teacher: Any) -> dict[str, str]:
    """The cache keys of a bi-encoder teacher's embeddings (in its own ``cache_root``, the one training reads)."""
    encoder, cache_root = getattr(teacher, "encoder", None), getattr(teacher, "cache_root", None)
    if encoder is None or cache_root is None:
        return {}
    precision = getattr(teacher, "precision", "auto")
    return {f"teacher_{side}": EmbeddingCache(cache_root, encoder, side, precision=precision).key
            for side in ("query", "passage")}


def teacher_filter(teacher: Any, queries: Sequence[str], positives: Sequence[Sequence[str]],
                   survivors: list[list[str]], cfg: TeacherFilterConfig, counts: Counter,
                   ) -> tuple[list[list[str]], list[list[float]], list[list[float]]]:
    """Rescore each query's surviving candidate texts; drop those with score >= weakest positive - margin.

    Returns (kept texts, their teacher scores, teacher scores of the positives) per query. Candidates beyond
    ``max_candidates`` are not rescored and are dropped (counted as ``teacher_unscored``).
    """
    pairs_q, pairs_p = [], []
    for query, pos, cands in zip(queries, positives, survivors):
        limit = len(cands) if cfg.max_candidates is None else cfg.max_candidates
        counts["teacher_unscored"] += max(0, len(cands) - limit)
        for text in list(pos) + list(cands[:limit]):
            pairs_q.append(query)
            pairs_p.append(text)
    scores = np.asarray(teacher.score(pairs_q, pairs_p) if pairs_q else np.zeros(0), dtype=np.float32)
    if not np.isfinite(scores).all():
        raise ValueError(f"teacher returned {int((~np.isfinite(scores)).sum())} non-finite scores")
    kept, kept_scores, pos_scores = [], [], []
    cursor = 0
    for pos, cands in zip(positives, survivors):
        limit = len(cands) if cfg.max_candidates is None else min(len(cands), cfg.max_candidates)
        p_s = scores[cursor:cursor + len(pos)].tolist()
        c_s = scores[cursor + len(pos):cursor + len(pos) + limit].tolist()
        cursor += len(pos) + limit
        bound = min(p_s) - cfg.margin
        keep = [i for i, s in enumerate(c_s) if s < bound]
        counts["teacher"] += limit - len(keep)
        kept.append([cands[i] for i in keep])
        kept_scores.append([c_s[i] for i in keep])
        pos_scores.append(p_s)
    return kept, kept_scores, pos_scores

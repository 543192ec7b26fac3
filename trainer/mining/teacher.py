"""False-negative filtering: a teacher rescores mined candidates; those scored near or above the positive go.

    python -m trainer.mine mine/teacher=mpnet ...          # bi-encoder teacher (embeddings cached on disk)
    python -m trainer.mine mine/teacher=cross_encoder teacher.name_or_path=PATH ...

The teachers are the project's own (``trainer.teachers``: eval mode, no grad, ``score(queries, passages)`` for
aligned pairs; the bi-encoder encodes each unique text once through the embedding cache). The scores of the kept
positives and negatives are written into the mined rows (``pos_scores`` / ``neg_scores``) so distillation never
runs the teacher on them again.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from trainer.encoding import EmbeddingCache
from trainer.mining.config import TeacherFilterConfig


def build_teacher(cfg: TeacherFilterConfig, cache_root: Optional[str | Path]) -> Optional[Any]:
    """A ``trainer.teachers`` teacher for ``teacher.kind`` (None for ``none``)."""
    if cfg.kind == "none":
        return None
    if not cfg.name_or_path:
        raise ValueError(f"teacher.kind={cfg.kind} needs teacher.name_or_path")
    from trainer.teachers import BiEncoderTeacher, CrossEncoderTeacher

    if cfg.kind == "bi_encoder":
        return BiEncoderTeacher(cfg.name_or_path, batch_size=cfg.batch_size, trust_remote_code=cfg.trust_remote_code,
                                cache_root=None if cache_root is None else str(cache_root))
    if cfg.kind == "cross_encoder":
        return CrossEncoderTeacher(cfg.name_or_path, max_length=cfg.max_length, batch_size=cfg.batch_size,
                                   trust_remote_code=cfg.trust_remote_code)
    raise ValueError(f"teacher.kind must be none, bi_encoder or cross_encoder, got {cfg.kind!r}")


def teacher_cache_keys(teacher: Any, cache_root: Optional[str | Path]) -> dict[str, str]:
    encoder = getattr(teacher, "encoder", None)
    if encoder is None or cache_root is None:
        return {}
    return {f"teacher_{side}": EmbeddingCache(cache_root, encoder, side).key for side in ("query", "passage")}


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

"""Selection rules for mined negatives; each rule counts what it removes.

    pytest -q tests/test_mining.py -k select

Per query, the index returns candidates in score order. In this order of application:
    positive    the candidate is a positive of the query's text (of this row or of another row with the same query)
    same_text   its text equals a positive's text (a duplicate passage), the query's text, or an earlier candidate's
    rank_window after those exclusions, ranks 1..skip_top are skipped and ranks above max_rank dropped
    margin      absolute: kept only if neg < pos - margin
    relative    TopK-PercPos (NV-Retriever): kept only if neg < pos - |pos| * (1 - p)   (= p * pos for pos > 0)
    max_score   kept only if neg <= max_score
then the teacher filter (``trainer.mining.teacher``) and sampling (``sample``: the best ``num_negatives``
survivors, or a uniform draw from rng(seed, query index)). ``pos`` is the query's weakest positive score, so a
candidate must clear every positive.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from trainer.mining.config import SelectConfig

RULES = ("missing", "positive", "same_text", "rank_window", "margin", "relative", "max_score")


def threshold_masks(scores: np.ndarray, pos_scores: np.ndarray, cfg: SelectConfig) -> dict[str, np.ndarray]:
    """Boolean (Q, K) masks of candidates each score rule REMOVES (independently of the other rules)."""
    pos = pos_scores[:, None]  # (Q, 1)
    masks = {}
    if cfg.margin is not None:
        masks["margin"] = ~(scores < pos - cfg.margin)
    if cfg.relative is not None:
        if not 0.0 < cfg.relative <= 1.0:
            raise ValueError(f"select.relative must be in (0, 1], got {cfg.relative}")
        masks["relative"] = ~(scores < pos - np.abs(pos) * (1.0 - cfg.relative))
    if cfg.max_score is not None:
        masks["max_score"] = scores > cfg.max_score
    return masks


def positive_matrix(pos_tids: Sequence[set[int]] | np.ndarray) -> np.ndarray:
    """(Q, P) text ids of each query's positives, padded with -2 (never a text id); a matrix passes through."""
    if isinstance(pos_tids, np.ndarray):
        return pos_tids
    width = max((len(p) for p in pos_tids), default=0)
    matrix = np.full((len(pos_tids), max(width, 1)), -2, dtype=np.int64)
    for q, p in enumerate(pos_tids):
        matrix[q, :len(p)] = sorted(p)
    return matrix


@dataclass
class QueryPositives:
    """The text ids each query never takes as a negative: the positives of every row with its query text.

    Data with one row per (query, positive) pair is common; a sibling row's positive is a positive of this query
    too, never its negative. A row's own positives are compared directly (fast, the common case); rows that share
    their query text also look their candidates up among the positives stored once per text (``group``).
    """
    own: np.ndarray  # (Q, P) int64 each row's own positive ids, padded with -2 (``positive_matrix``)
    group: np.ndarray  # (Q,) int64 group (query text) of each row
    pair_group: np.ndarray  # (N,) int64 group of each stored positive (repeats allowed)
    ids: np.ndarray  # (N,) int64 text id of each stored positive

    @classmethod
    def per_query(cls, pos_tids: Sequence[set[int]] | np.ndarray) -> "QueryPositives":
        """Every query its own group: per query sets of ids, or a ``positive_matrix``."""
        matrix = positive_matrix(pos_tids)  # (Q, P)
        rows, cols = np.nonzero(matrix != -2)
        return cls(matrix, np.arange(len(matrix)), rows, matrix[rows, cols])

    def _pair_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct ids (V,), sorted distinct ``group * V + id rank`` (M,)): exact, no hashing of pairs."""
        vocab = np.unique(self.ids)
        return vocab, np.unique(self.pair_group * len(vocab) + np.searchsorted(vocab, self.ids))

    def widest(self) -> int:
        """The most distinct positives one query text has (how deep a search must reach past them)."""
        vocab, keys = self._pair_keys()
        return int(np.bincount(keys // max(len(vocab), 1)).max(initial=0))

    def mask(self, cand_tids: np.ndarray) -> np.ndarray:
        """(Q, K) bool: which candidates are positives of their query's text."""
        is_pos = (cand_tids[:, :, None] == self.own[:, None, :]).any(-1)  # (Q, K) the row's own positives
        shared = np.flatnonzero(np.bincount(self.group)[self.group] > 1)  # rows with a sibling row
        if len(shared):
            is_pos[shared] |= self._in_group(cand_tids[shared], self.group[shared])
        return is_pos

    def _in_group(self, cand_tids: np.ndarray, group: np.ndarray) -> np.ndarray:
        """(R, K) bool: candidates among the positives of their row's group (sorted lookups, not broadcasts)."""
        vocab, keys = self._pair_keys()
        rank = np.clip(np.searchsorted(vocab, cand_tids), 0, len(vocab) - 1)  # (R, K)
        cand_keys = group[:, None] * len(vocab) + rank
        at = np.clip(np.searchsorted(keys, cand_keys), 0, len(keys) - 1)
        return (vocab[rank] == cand_tids) & (keys[at] == cand_keys)


def candidates(cand_tids: np.ndarray, cand_scores: np.ndarray, pos_tids: QueryPositives | Sequence[set[int]] | np.ndarray,
               query_tids: np.ndarray, pos_scores: np.ndarray, cfg: SelectConfig,
               counts: Counter) -> list[list[int]]:
    """Columns of ``cand_tids`` (Q, K) that survive every rule, per query in rank order; ``counts`` is updated."""
    return mask_columns(candidate_mask(cand_tids, cand_scores, pos_tids, query_tids, pos_scores, cfg, counts))


def mask_columns(mask: np.ndarray) -> list[list[int]]:
    """Per row of a (Q, K) mask, its true columns in order."""
    rows, cols = np.nonzero(mask)  # row-major: columns stay in rank order
    splits = np.searchsorted(rows, np.arange(1, len(mask)))
    return [c.tolist() for c in np.split(cols, splits)]


def candidate_mask(cand_tids: np.ndarray, cand_scores: np.ndarray, pos_tids: QueryPositives | Sequence[set[int]] | np.ndarray,
                   query_tids: np.ndarray, pos_scores: np.ndarray, cfg: SelectConfig,
                   counts: Counter) -> np.ndarray:
    """(Q, K) bool: the candidates that survive every rule; ``counts`` is updated.

    Args:
        cand_tids: (Q, K) text ids of the retrieved passages in score order, -1 where the index had fewer.
        cand_scores: (Q, K) miner scores of those passages.
        pos_tids: per query, the text ids it never takes as negatives: ``QueryPositives`` (the positives of
            every row with the query's text), or per query sets / a ``positive_matrix`` (its own only).
        query_tids: (Q,) text ids of the queries.
        pos_scores: (Q,) the weakest positive's miner score per query.
    """
    if cfg.skip_top < 0 or cfg.max_rank <= cfg.skip_top:
        raise ValueError(f"select: need 0 <= skip_top < max_rank, got skip_top={cfg.skip_top}, "
                         f"max_rank={cfg.max_rank}")
    missing = cand_tids == -1  # (Q, K)
    # Later copies of a text in the same row: sort each row, mark entries equal to their sorted predecessor.
    order = np.argsort(cand_tids, axis=1, kind="stable")
    sorted_tids = np.take_along_axis(cand_tids, order, 1)
    repeat_sorted = np.zeros_like(missing)
    repeat_sorted[:, 1:] = sorted_tids[:, 1:] == sorted_tids[:, :-1]
    repeat = np.zeros_like(missing)
    np.put_along_axis(repeat, order, repeat_sorted, 1)
    repeat &= ~missing
    positives = pos_tids if isinstance(pos_tids, QueryPositives) else QueryPositives.per_query(pos_tids)
    is_pos = positives.mask(cand_tids) & ~missing & ~repeat  # (Q, K)
    is_query = (cand_tids == query_tids[:, None]) & ~missing & ~repeat & ~is_pos if cfg.exclude_query_text \
        else np.zeros_like(missing)
    same_text = repeat | is_query
    eligible = ~(missing | is_pos | same_text)
    rank = np.cumsum(eligible, axis=1)  # rank among eligible candidates, 1-based where eligible
    outside = eligible & ((rank <= cfg.skip_top) | (rank > cfg.max_rank))
    alive = eligible & ~outside
    counts.update({"missing": int(missing.sum()), "positive": int(is_pos.sum()),
                   "same_text": int(same_text.sum()), "rank_window": int(outside.sum())})
    masks = threshold_masks(cand_scores, pos_scores, cfg)
    for name in ("margin", "relative", "max_score"):  # each removal counted under the first rule that removes it
        if name in masks:
            removed = alive & masks[name]
            counts[name] += int(removed.sum())
            alive &= ~removed
    return alive


def sample_top(alive: np.ndarray, num_negatives: int, counts: Counter) -> np.ndarray:
    """(Q, K) bool: the best ``num_negatives`` survivors of each row (``sample`` with sampling=top, vectorised)."""
    keep = alive & (np.cumsum(alive, axis=1) <= num_negatives)
    kept = keep.sum(axis=1)
    found = {"not_sampled": int(alive.sum() - kept.sum()), "selected": int(kept.sum()),
             "queries_short": int((kept < num_negatives).sum()), "queries_without_negatives": int((kept == 0).sum())}
    counts.update({name: n for name, n in found.items() if n})  # as ``sample`` counts: only what happened
    return keep


def sample(survivors: list[list[int]], cfg: SelectConfig, query_index: np.ndarray, counts: Counter,
           ) -> list[list[int]]:
    """Pick up to ``num_negatives`` of each query's survivors (rank order kept); counts the rest as not_sampled."""
    if cfg.sampling not in ("top", "random"):
        raise ValueError(f"select.sampling must be top or random, got {cfg.sampling!r}")
    n = cfg.num_negatives
    chosen: list[list[int]] = []
    for q, cols in enumerate(survivors):
        if len(cols) <= n:
            pick = cols
        elif cfg.sampling == "top":
            pick = cols[:n]
        else:
            rng = np.random.default_rng([cfg.seed, int(query_index[q])])
            pick = [cols[i] for i in sorted(rng.choice(len(cols), size=n, replace=False).tolist())]
        counts["not_sampled"] += len(cols) - len(pick)
        counts["selected"] += len(pick)
        if len(pick) < n:
            counts["queries_short"] += 1
        if not pick:
            counts["queries_without_negatives"] += 1
        chosen.append(pick)
    return chosen

"""Scores for the non-retrieval task kinds, computed from embeddings with scipy and scikit-learn.

    python -m trainer.evaluate checkpoint=runs/demo/checkpoints/step-000100 eval=suite

Every function takes L2-normalised or raw embeddings (cosine is computed here) and returns a flat
``{metric: float}`` dict with the names MTEB uses. Retrieval metrics live in ``retrieval.py``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, v_measure_score

def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, D), (N, D) -> (N,) cosine of each row pair."""
    return np.sum(_unit(a) * _unit(b), axis=1)


def sts_scores(emb1: np.ndarray, emb2: np.ndarray, gold: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson correlation between the pairs' cosine similarity and the gold scores."""
    cos = paired_cosine(emb1, emb2)  # (N,)
    gold_arr = np.asarray(gold, dtype=np.float64)
    return {"cosine_spearman": float(spearmanr(cos, gold_arr).statistic),
            "cosine_pearson": float(pearsonr(cos, gold_arr).statistic)}


def classification_scores(train_emb: np.ndarray, train_labels: Sequence[str], test_emb: np.ndarray,
                          test_labels: Sequence[str], seed: int = 42, max_iter: int = 1000) -> dict[str, float]:
    """Fit a logistic regression on the train embeddings; accuracy and macro-F1 on the test embeddings."""
    clf = LogisticRegression(max_iter=max_iter, random_state=seed)
    clf.fit(train_emb, list(train_labels))
    pred = clf.predict(test_emb)
    return {"accuracy": float(accuracy_score(list(test_labels), pred)),
            "f1": float(f1_score(list(test_labels), pred, average="macro"))}


def clustering_scores(emb: np.ndarray, labels: Sequence[str], seed: int = 42, n_init: int = 10) -> dict[str, float]:
    """k-means with k = number of gold labels on the unit-normalised embeddings; V-measure against the labels."""
    k = len(set(labels))
    pred = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(_unit(emb))
    return {"v_measure": float(v_measure_score(list(labels), pred))}


def pair_classification_scores(emb1: np.ndarray, emb2: np.ndarray, labels: Sequence[int]) -> dict[str, float]:
    """Average precision of the pairs' cosine similarity as a score for the positive (1) label."""
    y = np.asarray(labels, dtype=int)
    if set(np.unique(y)) - {0, 1}:
        raise ValueError(f"pair classification labels must be 0 or 1, got {sorted(set(np.unique(y)))}")
    return {"cosine_ap": float(average_precision_score(y, paired_cosine(emb1, emb2)))}


def reranking_scores(query_emb: np.ndarray, candidate_emb: list[np.ndarray],
                     relevant: list[np.ndarray]) -> dict[str, float]:
    """Per query, rank its candidates by cosine; mean average precision and mean reciprocal rank.

    Args:
        query_emb: (Q, D) query embeddings.
        candidate_emb: Q arrays (C_q, D), each query's candidates.
        relevant: Q arrays (C_q,) of 0/1, which candidates are relevant (at least one per query).
    """
    aps, rrs = [], []
    for q, cands, rel in zip(_unit(query_emb), candidate_emb, relevant):
        scores = _unit(cands) @ q  # (C_q,)
        rel = np.asarray(rel, dtype=int)
        aps.append(average_precision_score(rel, scores))
        order = np.argsort(-scores, kind="stable")
        rrs.append(1.0 / (int(np.flatnonzero(rel[order])[0]) + 1))
    return {"map": float(np.mean(aps)), "mrr": float(np.mean(rrs))}

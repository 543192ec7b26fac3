"""Students in their teacher's space: a Dense head (student width -> teacher width) fitted before training.

    python -m trainer.train experiment=distill_aligned     # distill.align=true

With ``distill.align=true`` the student gets a bias-free linear map after pooling into the teacher's dimension
(exported as a sentence-transformers ``Dense`` module, so the checkpoint loads unchanged there). Every loss then
sees student embeddings in the teacher's space, and the embedding-distillation part (cosine to the teacher's
embedding of the same text, through a fixed identity) pulls them onto the teacher's vectors: queries can be served
by the student against a corpus indexed once by the teacher (LEAF, arXiv 2509.12539).

A random head would start far from the teacher (cosine about 0) and spend the short run getting there; the head
starts instead at the ridge-regression solution W = argmin ||X W - Y||^2 + lam ||W||^2 over a sample of training
texts (X: the student's pooled vectors (N, D_s), Y: the teacher's normalised embeddings (N, D_t)). An unregularised
least-squares fit on a few thousand texts blows up (weight norms ~1e6); lam = ridge * tr(X^T X) / D_s keeps it sane.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import torch

from trainer.data.dataset import text_id
from trainer.data.schema import Example
from trainer.models.encoder import Encoder
from trainer.teachers.targets import TeacherTargets


def ridge_fit(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """(D_s, D_t) solution of min ||x W - y||^2 + lam ||W||^2, lam = ridge * tr(x^T x) / D_s (float64 solve)."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    gram = x64.T @ x64  # (D_s, D_s)
    lam = ridge * np.trace(gram) / gram.shape[0]
    return np.linalg.solve(gram + lam * np.eye(gram.shape[0]), x64.T @ y64)


def pooled_embeddings(encoder: Encoder, texts: Sequence[str], side: str, batch_size: int = 64) -> np.ndarray:
    """(N, D_s) the student's pooled vectors before any Dense module and normalisation (what the head reads)."""
    spec, dense = encoder.spec, encoder.dense
    encoder.spec, encoder.dense = dataclasses.replace(spec, normalize=False), None
    try:
        return encoder.encode(list(texts), side=side, batch_size=batch_size)
    finally:
        encoder.spec, encoder.dense = spec, dense


def attach_aligned_head(encoder: Encoder, targets: TeacherTargets, examples: Sequence[Example],
                        log: Callable[[str], None] = print, sample: int = 2048, ridge: float = 0.01,
                        seed: int = 0) -> None:
    """Give ``encoder`` a Dense head into the teacher's space, ridge-fitted on up to ``sample`` queries and as many
    positives (their teacher embeddings from ``targets``). A student that already has a head keeps it."""
    if encoder.dense is not None:
        log(f"distill.align: the student already maps {encoder.hidden_dim} -> {encoder.dim}; keeping its head")
        return
    if targets is None or targets.query_emb is None or targets.passage_emb is None:
        raise ValueError("distill.align=true needs a bi-encoder teacher (its embeddings): set teacher=mpnet or another "
                         "bi-encoder")
    covered = np.arange(len(examples)) if targets.covered is None else targets.covered  # rows the teacher embedded
    rows = covered[np.random.default_rng(seed).permutation(len(covered))[:sample]]
    queries = [examples[i].query for i in rows]
    passages = [examples[i].pos[0] for i in rows]
    pos_rows = np.searchsorted(targets.passage_ids, np.array([text_id(p) for p in passages], dtype=np.int64))
    y = np.concatenate([targets.query_emb[rows], targets.passage_emb[pos_rows]])  # (2n, D_t)
    x = np.concatenate([pooled_embeddings(encoder, queries, "query"), pooled_embeddings(encoder, passages, "passage")])
    weight = ridge_fit(x, y, ridge)  # (D_s, D_t)
    encoder.add_dense(y.shape[1], torch.from_numpy(np.ascontiguousarray(weight.T, dtype=np.float32)))
    fitted = torch.nn.functional.normalize(torch.from_numpy(x @ weight), dim=-1).numpy()
    cosine = float((fitted * y).sum(1).mean())
    log(f"distill.align: Dense head {encoder.hidden_dim} -> {encoder.dim} ridge-fitted on {len(x)} texts "
        f"(mean cosine to the teacher {cosine:.3f})")

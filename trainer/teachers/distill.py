"""Distillation parts of the objective: candidate scores for a batch, and the configured weighted losses.

    pytest tests/test_distill.py

``candidate_scores`` builds the (student, teacher) score matrices every score-based loss reads:
  - with cached teacher embeddings (``teacher_query``/``teacher_passage`` in the batch): each local query against
    every passage of the gathered batch, (B, W*B*(1+k)); the positive of query i sits at column (offset+i)*(1+k);
  - with pair scores only (``teacher_scores`` (B, 1+k)): each query against its own [positive, negatives], column 0.
Same-label candidates of label tasks (``query_labels`` / ``passage_labels``) are masked with -inf in the student
scores, so they drop out of both distributions (listwise KL) and of the margins (MarginMSE), as in the contrastive
loss. Student scores are dot products of its embeddings (cosines when normalised); gathering goes through
``trainer.distributed`` (with gradients for the student, without for the teacher).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from omegaconf import DictConfig
from torch import nn

from trainer.data.batch import Batch
from trainer.distributed import gather_no_grad, gather_with_grad, local_offset
from trainer.losses.infonce import same_label
from trainer.losses.registry import Dims, active_losses


def candidate_scores(query: torch.Tensor, passages: torch.Tensor, batch: Batch,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(student (B, C), teacher (B, C), labels (B,) column of each query's positive)."""
    size = query.shape[0]
    group = passages.shape[0] // size  # 1 + k
    if batch.has_teacher_embeddings:
        all_passages = gather_with_grad(passages)  # (W*B*(1+k), D)
        all_teacher = gather_no_grad(batch.teacher_passage.float())  # (W*B*(1+k), D_t)
        student = query @ all_passages.T  # (B, W*B*(1+k))
        teacher = batch.teacher_query.float() @ all_teacher.T  # (B, W*B*(1+k))
        labels = (local_offset(size) + torch.arange(size, device=query.device)) * group
        if batch.query_labels is not None and batch.passage_labels is not None:
            mask = same_label(batch.query_labels, gather_no_grad(batch.passage_labels), labels)  # (B, C)
            student = student.masked_fill(mask, float("-inf"))
        return student, teacher, labels
    if batch.teacher_scores is not None:
        student = (query.unsqueeze(1) * passages.view(size, group, -1)).sum(-1)  # (B, 1+k)
        labels = torch.zeros(size, dtype=torch.long, device=query.device)
        return student, batch.teacher_scores.float(), labels
    raise KeyError("distillation needs teacher targets in the batch (teacher_query/teacher_passage from a "
                   "bi-encoder teacher, or teacher_scores from the data or a cross-encoder): set teacher=...")


def bank_candidates(batch: Batch, size: int, unlabeled: int = 0,
                    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """The teacher's candidates for ``distill.teacher_bank``: (candidates (C, D_t), labels (B+U,), mask (B+U, C)).

    Columns: every passage of the gathered batch, query-major (the positive of local query i at
    (offset + i) * (1+k)), then the step's draw from the teacher's bank. Rows: the B queries, then ``unlabeled``
    unlabeled texts (label -100). Masked: bank copies of a batch passage (the batch already holds them) and, per
    query, any other copy of one of its positives."""
    if not batch.has_teacher_embeddings or batch.teacher_bank is None:
        raise KeyError("distill.teacher_bank needs the teacher's embeddings and its bank draw in the batch "
                       "(a bi-encoder teacher)")
    passages = gather_no_grad(batch.teacher_passage.float())  # (W*B*(1+k), D_t)
    group = batch.teacher_passage.shape[0] // size  # 1 + k
    labels = (local_offset(size) + torch.arange(size, device=passages.device)) * group  # (B,)
    labels = torch.cat([labels, labels.new_full((unlabeled,), -100)])  # (B+U,)
    candidates = torch.cat([passages, batch.teacher_bank.float()])  # (C, D_t)
    if batch.passage_ids is None or batch.teacher_bank_ids is None:
        return candidates, labels, None
    batch_ids = gather_no_grad(batch.passage_ids)  # (W*B*(1+k),)
    ids = torch.cat([batch_ids, batch.teacher_bank_ids])  # (C,)
    in_batch = torch.zeros_like(ids, dtype=torch.bool)
    in_batch[len(batch_ids):] = torch.isin(batch.teacher_bank_ids, batch_ids)
    mask = in_batch.unsqueeze(0).expand(size + unlabeled, -1).clone()  # (B+U, C)
    positives = batch.positive_ids if batch.positive_ids is not None else ids[labels[:size]].unsqueeze(1)  # (B, P)
    copies = (ids.view(1, -1, 1) == positives.unsqueeze(1)).any(-1)  # (B, C): a copy of one of its positives
    copies[torch.arange(size), labels[:size]] = False  # the labelled column itself stays
    mask[:size] |= copies
    return candidates, labels, mask


def distill_parts(losses: nn.ModuleDict, query: torch.Tensor, passages: torch.Tensor, batch: Batch,
                  unlabeled: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """Weighted distillation parts, one per configured loss, named by its registered part. ``unlabeled`` (U, D_s):
    the student's embeddings of the batch's unlabeled texts (``distill.unlabeled``), if any."""
    parts: dict[str, torch.Tensor] = {}
    scores: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
    for name, loss in losses.items():
        if batch.teacher_skipped and loss.inputs != "unlabeled":
            # distill.tasks leaves this batch out: a zero that still touches every parameter of the loss (DDP
            # expects a gradient for each, every step).
            parts[name] = query.sum() * 0.0 + sum((p.sum() * 0.0 for p in loss.parameters()), query.new_zeros(()))
            continue
        if loss.inputs == "unlabeled":
            if unlabeled is None or batch.teacher_unlabeled is None:
                raise KeyError("unlabeled distillation needs the batch's unlabeled texts and their teacher embeddings")
            value = loss(unlabeled, batch.teacher_unlabeled)
        elif loss.inputs == "bank":
            queries, teacher_queries = query, batch.teacher_query  # (B, D_t) each
            if loss.use_unlabeled and unlabeled is not None and batch.teacher_unlabeled is not None:
                queries = torch.cat([query, unlabeled])  # (B+U, D_t): unlabeled texts rank the bank too (KL only)
                teacher_queries = torch.cat([teacher_queries, batch.teacher_unlabeled])
            candidates, labels, mask = bank_candidates(batch, query.shape[0], queries.shape[0] - query.shape[0])
            value = loss(queries, teacher_queries, candidates, labels, mask)
        elif loss.inputs == "embeddings":
            if not batch.has_teacher_embeddings:
                raise KeyError("embedding distillation needs cached teacher embeddings (a bi-encoder teacher)")
            student = [query, passages] + ([unlabeled] if unlabeled is not None else [])
            teacher = [batch.teacher_query, batch.teacher_passage] + (
                [batch.teacher_unlabeled] if unlabeled is not None else [])
            value = loss(torch.cat(student), torch.cat(teacher))  # (B + B*(1+k) [+ U], D_s), (..., D_t)
        else:
            scores = scores if scores is not None else candidate_scores(query, passages, batch)
            value = loss(*scores)
        parts[name] = loss.weight * value
    return parts


def build_distill_losses(cfg: Optional[DictConfig], student_dim: int, teacher_dim: Optional[int]) -> nn.ModuleDict:
    """The registered losses ``cfg`` (the ``distill`` group) turns on, keyed by their logged part names."""
    losses = nn.ModuleDict()
    if cfg is None:
        return losses
    dims = Dims(student_dim, teacher_dim, bool(cfg.get("align", False)))
    for name, entry in active_losses(cfg).items():
        losses[entry.part] = entry.build(cfg.get(name), dims)
    return losses

"""Asymmetric distillation: the student's queries search the teacher's own passage vectors.

    pytest tests/test_teacher_bank.py

What an aligned student (``distill.align=true``) is for: documents indexed once by the teacher, queries served by
the student. This loss trains exactly that. For query i with the student's embedding s_i and the teacher's t_i
(both (D_t,), in the teacher's space) and candidates c_j (C, D_t), the teacher's embeddings of every passage of
the gathered batch followed by N passages drawn from all the training passages the teacher embedded (its bank):

    q_ij = softmax_j(s_i . c_j / T_s)          p_ij = softmax_j(t_i . c_j / T_t)
    L    = 1/B sum_i [ KL(p_i || q_i) + lambda * (-log q_{i, pos(i)}) ]

The teacher's ranking of the bank is the target, the labelled positive sharpens it (``contrastive_weight``
lambda). The KL needs no labels: with ``distill.unlabeled`` the step's unlabeled texts join the queries (label
-100: no cross-entropy term), so every headline-like text the teacher embedded teaches the student to rank the
teacher's corpus as the teacher does. Candidates are the teacher's, fixed: the gradient reaches the student's
query side only. Masked candidates (bank copies of batch passages, other positives of the same query) drop out of
both distributions.
Shapes: query (B, D_t), teacher_query (B, D_t), candidates (C, D_t), labels (B,) column of each positive or -100,
mask (B, C) bool -> scalar (the cross-entropy is averaged over labelled rows only).
Reference: Kim et al. 2023 (EmbedDistill, arXiv 2301.12005: a query encoder distilled against the teacher's
frozen document embeddings); LEAF (arXiv 2509.12539: students in the teacher's space, asymmetric retrieval).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from trainer.losses.listwise_kl import ListwiseKL
from trainer.losses.registry import Dims, register_distill_loss


@dataclass
class TeacherBankConfig:
    weight: float = 0.0  # 0 = off
    contrastive_weight: float = 1.0  # lambda: cross-entropy on the labelled positive, beside the KL
    bank_size: int = 4096  # >= 1 teacher passages drawn per step from the bank (all of them when it is smaller)
    student_temperature: float = 0.05
    teacher_temperature: float = 0.05
    unlabeled: bool = True  # the step's distill.unlabeled texts search the bank too (the KL only: no labels)


class TeacherBankLoss(nn.Module):
    inputs = "bank"  # takes (student queries, teacher queries, teacher candidates, labels, mask)

    def __init__(self, contrastive_weight: float = 1.0, student_temperature: float = 0.05,
                 teacher_temperature: float = 0.05, weight: float = 1.0, use_unlabeled: bool = True) -> None:
        super().__init__()
        # The KL part is the listwise KL over the bank's scores (it checks the temperatures, drops masked columns).
        self.kl = ListwiseKL(student_temperature, teacher_temperature, t2_scaling=False)
        self.contrastive_weight = contrastive_weight
        self.student_temperature = student_temperature
        self.weight = weight
        self.use_unlabeled = use_unlabeled  # distill.teacher_bank.unlabeled

    def forward(self, query: torch.Tensor, teacher_query: torch.Tensor, candidates: torch.Tensor,
                labels: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if query.shape[1] != candidates.shape[1]:
            raise ValueError(f"student queries embed into {query.shape[1]} dimensions, the teacher's passages into "
                             f"{candidates.shape[1]}: asymmetric distillation needs distill.align=true")
        candidates = candidates.detach().float()
        student = query.float() @ candidates.T  # (B, C) cosines
        teacher = teacher_query.detach().float() @ candidates.T  # (B, C)
        if mask is not None:
            student = student.masked_fill(mask, float("-inf"))  # the KL drops these columns from both sides
        kl = self.kl(student, teacher)
        labelled = labels >= 0
        if not self.contrastive_weight or not labelled.any():
            return kl
        nll = F.cross_entropy(student[labelled] / self.student_temperature, labels[labelled])
        return kl + self.contrastive_weight * nll


@register_distill_loss("teacher_bank", part="bank", config=TeacherBankConfig, inputs="bank",
                       needs_teacher_embeddings=True)
def build_teacher_bank(settings: Any, dims: Dims) -> TeacherBankLoss:
    if dims.teacher is None:
        raise ValueError("distill.teacher_bank needs a bi-encoder teacher (its passage embeddings)")
    if not dims.align or dims.student != dims.teacher:
        raise ValueError("distill.teacher_bank scores the student's queries against the teacher's passages: it needs "
                         f"distill.align=true (student {dims.student} dimensions, teacher {dims.teacher})")
    if settings.bank_size < 1:
        raise ValueError(f"distill.teacher_bank.bank_size must be >= 1, got {settings.bank_size}")
    return TeacherBankLoss(settings.contrastive_weight, settings.student_temperature, settings.teacher_temperature,
                           settings.weight, bool(settings.unlabeled))

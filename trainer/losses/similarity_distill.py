"""Similarity-matrix distillation: the student's in-batch query-passage similarities match the teacher's.

    pytest tests/test_distill.py -k similarity

S (B, C): student similarities of each local query with every passage of the gathered batch; T (B, C): the
teacher's, from its cached embeddings. Both are similarity matrices, so the dimensions of the two models never
meet and no projection is needed:

    L = 1/(B C) sum_ij (a_s S_ij - a_t T_ij)^2

Shapes: ``student`` (B, C), ``teacher`` (B, C) -> scalar. Masked (-inf) entries are skipped.
Reference: Tung & Mori 2019 (similarity-preserving KD); Kim et al. 2023 (embedding-to-embedding distillation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trainer.losses.base import ScaledScoreDistill
from trainer.losses.registry import Dims, register_distill_loss


@dataclass
class SimilarityDistillConfig:
    weight: float = 0.0
    student_scale: float = 1.0
    teacher_scale: float = 1.0


class SimilarityDistill(ScaledScoreDistill):
    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """student (B, C), teacher (B, C) -> scalar; ``labels`` is unused."""
        if student.shape != teacher.shape:
            raise ValueError(f"student {tuple(student.shape)} vs teacher {tuple(teacher.shape)} similarity matrices")
        diff = student.float() * self.student_scale - teacher.detach().float() * self.teacher_scale  # (B, C)
        keep = torch.isfinite(diff)
        return torch.where(keep, diff, torch.zeros_like(diff)).pow(2).sum() / keep.sum().clamp(min=1)


@register_distill_loss("similarity", part="sim_distill", config=SimilarityDistillConfig, inputs="scores",
                       needs_teacher_embeddings=True)  # the teacher's in-batch similarities need its embeddings
def build_similarity_distill(settings: Any, dims: Dims) -> SimilarityDistill:
    return SimilarityDistill(settings.student_scale, settings.teacher_scale, settings.weight)

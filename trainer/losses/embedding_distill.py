"""Embedding distillation: the student's embedding, through a learned projection, regresses onto the teacher's.

    pytest tests/test_distill.py -k embedding

With student embeddings x (N, D_s), teacher embeddings e (N, D_t) of the same texts and a learned linear map
W: D_s -> D_t (the teachers differ in dimension: MiniLM 384 -> MPNet 768):

    mse:     L = 1/(N D_t) sum_n || W x_n - e_n ||^2
    cosine:  L = 1/N sum_n (1 - cos(W x_n, e_n))

The projection lives in this module, hence in ``Objective`` and in the resume state; exported checkpoints save
the encoder only, so inference never uses it. Rows are queries and passages together.
Reference: Sanh et al. 2019 (DistilBERT, cosine embedding loss); Reimers & Gurevych 2020 (multilingual
distillation, MSE to teacher embeddings).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer.losses.registry import Dims, register_distill_loss

KINDS = ("mse", "cosine")


@dataclass
class EmbeddingDistillConfig:
    weight: float = 0.0
    kind: str = "mse"  # mse | cosine, through a learned student_dim -> teacher_dim projection


class EmbeddingDistill(nn.Module):
    inputs = "embeddings"  # takes (student (N, D_s), teacher (N, D_t))

    def __init__(self, student_dim: int, teacher_dim: int, kind: str = "mse", weight: float = 1.0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"embedding distillation kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.weight = weight
        self.projection = nn.Linear(student_dim, teacher_dim, bias=False)  # (D_t, D_s) weight
        if student_dim == teacher_dim:
            nn.init.eye_(self.projection.weight)  # start from the identity when no projection is needed

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """student (N, D_s), teacher (N, D_t) -> scalar."""
        projected = self.projection(student.float())  # (N, D_t)
        if projected.shape != teacher.shape:
            raise ValueError(f"projected student {tuple(projected.shape)} vs teacher {tuple(teacher.shape)}")
        teacher = teacher.detach().float()
        if self.kind == "mse":
            return F.mse_loss(projected, teacher)
        return (1.0 - F.cosine_similarity(projected, teacher, dim=-1)).mean()


@register_distill_loss("embedding", part="embed_distill", config=EmbeddingDistillConfig, inputs="embeddings",
                       needs_teacher_embeddings=True)
def build_embedding_distill(settings: Any, dims: Dims) -> EmbeddingDistill:
    if dims.teacher is None:
        raise ValueError("distill.embedding needs a bi-encoder teacher (its embedding dimension)")
    part = EmbeddingDistill(dims.student, dims.teacher, settings.kind, settings.weight)
    if dims.align:  # the student's own Dense head is the projection: this one stays the identity
        if dims.student != dims.teacher:
            raise ValueError(f"distill.align: the student's output ({dims.student}) must match the teacher's "
                             f"({dims.teacher})")
        part.projection.requires_grad_(False)
    return part

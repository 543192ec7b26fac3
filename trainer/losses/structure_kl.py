"""Similarity-structure KL on unlabeled texts: each text's neighbours, as the student ranks them, follow the teacher.

    pytest tests/test_unlabeled.py

For U texts with student embeddings x (U, D_s) and teacher embeddings e (U, D_t) (each L2-normalised by its model),
every text is a query against the other U - 1 (itself masked):

    s_ij = x_i . x_j      t_ij = e_i . e_j      (i != j)
    L    = 1/U sum_i KL( softmax_j(t_ij / T_t) || softmax_j(s_ij / T_s) )

No labels and no projection: only similarities are compared, so the two models' dimensions never meet. It is the
listwise KL of ``ListwiseKL`` on text-to-text candidates, i.e. relational / similarity-preserving distillation
applied to unlabeled text.
Shapes: ``student`` (U, D_s), ``teacher`` (U, D_t) -> scalar; zero when s / T_s = t / T_t off the diagonal.
Reference: Park et al. 2019 (relational KD); Tung & Mori 2019 (similarity-preserving KD); Zhang et al. 2025
(Jasper/Stella: similarity-structure losses for embedding distillation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from trainer.losses.listwise_kl import ListwiseKL
from trainer.losses.registry import Dims, register_distill_loss


@dataclass
class UnlabeledDistillConfig:
    """Unlabeled text (trainer/teachers/unlabeled.py): each step also embeds ``batch_size`` texts of one source; the
    student's similarity distribution over them follows the teacher's (``StructureKL``)."""
    files: list[str] = field(default_factory=list)  # JSONL files with a "text" field; empty = off
    max_texts_per_file: Optional[int] = None  # seeded sample per file: the teacher embeds these once (cached)
    batch_size: int = 64  # texts per step and process, all from one file
    weight: float = 1.0
    student_temperature: float = 0.05
    teacher_temperature: float = 0.05


class StructureKL(ListwiseKL):
    inputs = "unlabeled"  # takes (student (U, D_s), teacher (U, D_t)) embeddings of the same unlabeled texts

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """student (U, D_s), teacher (U, D_t) embeddings -> scalar; ``labels`` is unused."""
        if student.shape[0] != teacher.shape[0] or student.shape[0] < 2:
            raise ValueError(f"student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}: the same >= 2 texts")
        student, teacher = student.float(), teacher.detach().float()
        self_pairs = torch.eye(student.shape[0], dtype=torch.bool, device=student.device)  # (U, U)
        scores = (student @ student.T).masked_fill(self_pairs, float("-inf"))  # (U, U)
        return super().forward(scores, teacher @ teacher.T)


@register_distill_loss("unlabeled", part="unlabeled_kl", config=UnlabeledDistillConfig, inputs="unlabeled",
                       needs_teacher_embeddings=True, active=lambda s: bool(s.files) and s.weight > 0)
def build_structure_kl(settings: Any, dims: Dims) -> StructureKL:
    return StructureKL(settings.student_temperature, settings.teacher_temperature, False, settings.weight)

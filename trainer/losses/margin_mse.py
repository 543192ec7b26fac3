"""MarginMSE: the student's (positive - negative) score margins regress onto the teacher's.

    pytest tests/test_distill.py -k margin

For query i with positive column y_i and every other candidate j (hard negatives, and in-batch passages when
teacher embeddings are cached), with score scales a_s, a_t (e.g. 1/temperature, or to bring cross-encoder logits
and cosines to one scale):

    L = 1/(B (C-1)) sum_i sum_{j != y_i} ( a_s (s_iy - s_ij) - a_t (t_iy - t_ij) )^2

Shapes: ``student`` (B, C), ``teacher`` (B, C), ``labels`` (B,) column of each query's positive -> scalar.
Zero, with zero gradient, when a_s s = a_t t (up to a per-query constant). Masked (-inf) candidates are skipped.
Reference: Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture KD".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trainer.losses.base import ScaledScoreDistill
from trainer.losses.registry import Dims, register_distill_loss


@dataclass
class MarginMSEConfig:
    weight: float = 0.0
    student_scale: float = 1.0  # margins are scale * (s_pos - s_neg); match the teacher's score scale
    teacher_scale: float = 1.0


class MarginMSE(ScaledScoreDistill):
    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """student (B, C), teacher (B, C), labels (B,) -> scalar."""
        if student.shape != teacher.shape or student.shape[1] < 2:
            raise ValueError(f"MarginMSE needs equal (B, C>=2) scores, got {tuple(student.shape)} and "
                             f"{tuple(teacher.shape)} (no negatives: set data.num_negatives or cache teacher "
                             "embeddings for in-batch margins)")
        rows = torch.arange(student.shape[0], device=student.device)
        student = student.float() * self.student_scale
        teacher = teacher.detach().float() * self.teacher_scale
        s_margin = student[rows, labels].unsqueeze(1) - student  # (B, C)
        t_margin = teacher[rows, labels].unsqueeze(1) - teacher  # (B, C)
        keep = torch.isfinite(s_margin) & torch.isfinite(t_margin)
        keep[rows, labels] = False  # the positive against itself is no margin
        diff = torch.where(keep, s_margin - t_margin, torch.zeros_like(s_margin))
        return diff.pow(2).sum() / keep.sum().clamp(min=1)


@register_distill_loss("margin_mse", part="margin_mse", config=MarginMSEConfig, inputs="scores")
def build_margin_mse(settings: Any, dims: Dims) -> MarginMSE:
    return MarginMSE(settings.student_scale, settings.teacher_scale, settings.weight)

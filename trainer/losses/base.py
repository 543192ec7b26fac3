"""What the training step expects of a loss: the contrastive protocol and the scaled-score distillation base.

    pytest tests/test_losses.py tests/test_distill.py

A contrastive loss (``loss=...``, e.g. ``InfoNCE``) is any module with the ``ContrastiveLoss`` shape: called on
float32 embeddings, it returns a scalar; ``weight`` scales it in the total; ``temperature`` is logged each step.
A learnable temperature is a parameter whose name contains ``log_inv_temperature`` (the optimizer gives it no
weight decay). Distillation losses on scores (``inputs = "scores"``) take student and teacher (B, C) matrices.
"""
from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class ContrastiveLoss(Protocol):
    """query (B, D), passages (B*(1+k), D), passage_ids (B*(1+k),) or None -> scalar loss."""
    weight: float

    @property
    def temperature(self) -> float: ...

    def __call__(self, query: torch.Tensor, passages: torch.Tensor, passage_ids: Optional[torch.Tensor] = None, *,
                 positive_ids: Optional[torch.Tensor] = None, query_ids: Optional[torch.Tensor] = None,
                 ) -> torch.Tensor: ...


class ScaledScoreDistill(nn.Module):
    """Base of losses that compare ``student_scale * student`` with ``teacher_scale * teacher`` scores (B, C)."""
    inputs = "scores"

    def __init__(self, student_scale: float = 1.0, teacher_scale: float = 1.0, weight: float = 1.0) -> None:
        super().__init__()
        self.student_scale = student_scale
        self.teacher_scale = teacher_scale
        self.weight = weight

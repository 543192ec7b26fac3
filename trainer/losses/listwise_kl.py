"""Listwise KL distillation: the student's score distribution over each query's candidates follows the teacher's.

    pytest tests/test_distill.py -k kl

For query i with candidates C_i (its positive, its hard negatives and, when teacher embeddings are cached, every
in-batch passage of the gathered batch), student scores s_ij, teacher scores t_ij, temperatures T_s and T_t:

    p_ij = softmax_j(t_ij / T_t)          q_ij = softmax_j(s_ij / T_s)
    L    = c / B * sum_i sum_j p_ij (log p_ij - log q_ij)        c = T_s^2 if t2_scaling else 1

The softmaxes run in float32. T^2 scaling (Hinton et al.) keeps the gradient size independent of T when T > 1 on
logits; on cosine scores with T < 1 it shrinks the loss by T_s^2, so weights are set with that in mind.
Candidates masked with -inf in the student scores (or the teacher's) drop out of both distributions.

Shapes: ``student`` (B, C), ``teacher`` (B, C) -> scalar. The loss is zero, with zero gradient, when
s / T_s = t / T_t.
Reference: Hinton et al. 2015 (distillation); Qu et al. 2021 (RocketQA); Xiao et al. 2023 (BGE, listwise KL).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer.losses.registry import Dims, register_distill_loss


@dataclass
class ListwiseKLConfig:
    weight: float = 0.0  # 0 = off
    student_temperature: float = 0.05
    teacher_temperature: float = 0.05  # lower = sharper teacher distribution
    t2_scaling: bool = True  # multiply by student_temperature^2 (Hinton); on cosines (T<1) this shrinks the loss


class ListwiseKL(nn.Module):
    inputs = "scores"  # takes (student, teacher) candidate-score matrices

    def __init__(self, student_temperature: float = 0.05, teacher_temperature: float = 0.05,
                 t2_scaling: bool = True, weight: float = 1.0) -> None:
        super().__init__()
        if student_temperature <= 0 or teacher_temperature <= 0:
            raise ValueError(f"temperatures must be > 0, got student {student_temperature}, "
                             f"teacher {teacher_temperature}")
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.t2_scaling = t2_scaling
        self.weight = weight

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """student (B, C), teacher (B, C) scores -> scalar; ``labels`` (positive columns) is unused."""
        if student.shape != teacher.shape:
            raise ValueError(f"student scores {tuple(student.shape)} and teacher scores {tuple(teacher.shape)} differ")
        teacher = teacher.detach().float()
        masked = torch.isinf(student) | torch.isinf(teacher)  # (B, C)
        log_q = F.log_softmax((student.float() / self.student_temperature).masked_fill(masked, float("-inf")), -1)
        log_p = F.log_softmax((teacher / self.teacher_temperature).masked_fill(masked, float("-inf")), -1)
        # p log p - p log q on kept candidates; masked ones contribute 0 (avoids 0 * -inf = nan).
        terms = torch.where(masked, torch.zeros_like(log_q), log_p.exp() * (log_p - log_q))  # (B, C)
        loss = terms.sum(dim=-1).mean()
        return loss * self.student_temperature ** 2 if self.t2_scaling else loss


@register_distill_loss("listwise_kl", part="kl", config=ListwiseKLConfig, inputs="scores")
def build_listwise_kl(settings: Any, dims: Dims) -> ListwiseKL:
    return ListwiseKL(settings.student_temperature, settings.teacher_temperature, settings.t2_scaling,
                      settings.weight)

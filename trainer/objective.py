"""What a training step computes: embeddings of a batch and the weighted loss parts.

    pytest tests/test_losses.py tests/test_e2e.py

``Objective`` holds every module whose parameters training updates (the encoder, a learnable temperature,
distillation projections), so one ``accelerator.prepare`` wraps them together and one forward gives
``{"loss": total, "contrastive": ..., ...}``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from trainer.data.batch import Batch
from trainer.losses.base import ContrastiveLoss
from trainer.models.encoder import Encoder


class Objective(nn.Module):
    def __init__(self, encoder: Encoder, contrastive: ContrastiveLoss, distill: Optional[nn.ModuleDict] = None) -> None:
        super().__init__()
        self.encoder = encoder
        if not isinstance(contrastive, ContrastiveLoss):
            raise TypeError(f"the contrastive loss {type(contrastive).__name__} lacks weight or temperature "
                            "(trainer/losses/base.py: ContrastiveLoss)")
        self.contrastive = contrastive
        # Distillation losses (trainer.teachers.distill): their projections train with the encoder and are part
        # of the resume state; exported checkpoints hold the encoder only.
        self.distill = distill if distill is not None else nn.ModuleDict()

    def embed(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Query (B, D) and passage (B*(1+k), D) embeddings."""
        return self.encoder(**batch.query), self.encoder(**batch.passage)

    def forward(self, batch: Any, gradcache: Optional[dict[str, Any]] = None) -> Any:
        if gradcache is not None:  # GradCache passes run through here so DDP/autocast wrappers apply
            from trainer.gradcache import minibatch_forward

            return minibatch_forward(self, batch, **gradcache)
        query, passages = self.embed(batch)
        unlabeled = self.encoder(**batch.unlabeled) if batch.unlabeled is not None else None  # (U, D)
        return self.loss_parts(query, passages, batch, unlabeled)

    def loss_parts(self, query: torch.Tensor, passages: torch.Tensor, batch: Batch,
                   unlabeled: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Weighted parts and their sum under ``loss``; parts are logged separately.

        The similarities and losses are computed in float32 with autocast off, whatever precision the embeddings
        came in: the plain step (inside the autocast-wrapped forward) and GradCache (outside it) then compute the
        same loss, and bf16's 8-bit mantissa never rounds scores that are divided by a temperature of 0.05.
        """
        with torch.autocast(query.device.type, enabled=False):
            query, passages = query.float(), passages.float()  # (B, D), (B*(1+k), D)
            unlabeled = unlabeled.float() if unlabeled is not None else None  # (U, D): distill.unlabeled
            contrastive = self.contrastive(query, passages, batch.passage_ids, positive_ids=batch.positive_ids,
                                           query_ids=batch.query_ids, query_labels=batch.query_labels,
                                           passage_labels=batch.passage_labels)
            parts = {"contrastive": self.contrastive.weight * contrastive}
            if len(self.distill):
                from trainer.teachers.distill import distill_parts

                # teacher targets ride in the batch
                parts.update(distill_parts(self.distill, query, passages, batch, unlabeled))
        parts["loss"] = sum(parts.values())
        return parts

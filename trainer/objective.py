"""What a training step computes: embeddings of a batch and the weighted loss parts.

    pytest tests/test_losses.py tests/test_e2e.py

``Objective`` holds every module whose parameters training updates (the encoder, a learnable temperature,
distillation projections), so one ``accelerator.prepare`` wraps them together and one forward gives
``{"loss": total, "contrastive": ..., ...}``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer.models.encoder import Encoder


class Objective(nn.Module):
    def __init__(self, encoder: Encoder, contrastive: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.contrastive = contrastive

    def embed(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Query (B, D) and passage (B*(1+k), D) embeddings."""
        return self.encoder(**batch["query"]), self.encoder(**batch["passage"])

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        query, passages = self.embed(batch)
        return self.loss_parts(query, passages, batch)

    def loss_parts(self, query: torch.Tensor, passages: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Weighted parts and their sum under ``loss``; parts are logged separately."""
        parts = {"contrastive": self.contrastive.weight * self.contrastive(query, passages, batch.get("passage_ids"))}
        parts["loss"] = sum(parts.values())
        return parts

"""Losses: one per file; each takes embeddings or scores, never the model."""
from trainer.losses.infonce import InfoNCE

__all__ = ["InfoNCE"]

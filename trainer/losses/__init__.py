"""Losses: one per file; each takes embeddings or scores, never the model."""
from trainer.losses.infonce import InfoNCE
from trainer.losses.embedding_distill import EmbeddingDistill
from trainer.losses.listwise_kl import ListwiseKL
from trainer.losses.margin_mse import MarginMSE
from trainer.losses.similarity_distill import SimilarityDistill

__all__ = ["EmbeddingDistill", "ListwiseKL", "MarginMSE", "SimilarityDistill", "InfoNCE"]

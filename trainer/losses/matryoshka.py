"""Matryoshka representation learning: the contrastive loss on nested prefixes of the embedding.

    python -m trainer.train loss=matryoshka                     # dims 64, 128, 256 and the full 384
    pytest tests/test_losses.py -k matryoshka

For prefix sizes d_1 < ... < d_M (and the full dimension D, always included) with weights w_m, and the
wrapped contrastive loss L (InfoNCE with its in-batch and hard negatives, temperature, masking, gathering):

    L_MRL = sum_m w_m L( r(q[:, :d_m]), r(p[:, :d_m]) ) / sum_m w_m,    r(x) = x / ||x||  (renormalise)

so any prefix of a trained embedding is itself a usable embedding (truncate, renormalise, search). The
weighted mean keeps the loss on the scale of one InfoNCE term, so learning rates carry over.
Shapes: ``query`` (B, D), ``passages`` (B*(1+k), D) -> scalar.
Reference: Kusupati et al. 2022, "Matryoshka Representation Learning".
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def truncate(x: torch.Tensor, dim: int, renormalize: bool = True) -> torch.Tensor:
    """(N, D) -> (N, dim): the first ``dim`` coordinates, L2-renormalised."""
    x = x[..., :dim]
    return F.normalize(x, dim=-1) if renormalize else x


class Matryoshka(nn.Module):
    """Wraps a contrastive loss ``inner(query, passages, passage_ids)``; exposes its temperature and weight."""

    def __init__(self, inner: nn.Module, dims: Sequence[int], weights: Optional[Sequence[float]] = None,
                 renormalize: bool = True) -> None:
        super().__init__()
        dims = sorted({int(d) for d in dims})
        if not dims or dims[0] < 1:
            raise ValueError(f"loss.matryoshka_dims must be positive sizes, got {list(dims)}")
        if weights is not None and len(weights) != len(dims):
            raise ValueError(f"loss.matryoshka_weights: {len(weights)} weights for {len(dims)} dims {dims}")
        self.inner = inner
        self.dims = dims
        self.weights = [float(w) for w in weights] if weights is not None else [1.0] * len(dims)
        self.renormalize = renormalize
        self.weight = getattr(inner, "weight", 1.0)

    @property
    def temperature(self) -> float:
        return self.inner.temperature

    def forward(self, query: torch.Tensor, passages: torch.Tensor, passage_ids: Optional[torch.Tensor] = None,
                **masks: Optional[torch.Tensor]) -> torch.Tensor:
        """As the inner loss; ``masks`` (``positive_ids``, ``query_ids``) pass through to it."""
        full = query.shape[-1]
        if self.dims[-1] > full:
            raise ValueError(f"loss.matryoshka_dims {self.dims} exceed the embedding dimension {full}")
        pairs = [(d, w) for d, w in zip(self.dims, self.weights) if d < full] + [(full, 1.0)]
        total = query.new_zeros(())
        for dim, weight in pairs:
            q = truncate(query, dim, self.renormalize) if dim < full else query
            p = truncate(passages, dim, self.renormalize) if dim < full else passages
            total = total + weight * self.inner(q, p, passage_ids, **masks)
        return total / sum(w for _, w in pairs)

"""Pooling of token states into one embedding per text (mean, cls, last token).

    pytest tests/test_encoder.py -k pooling

Works under right or left padding: positions are found from the masks, never assumed.
"""
from __future__ import annotations

import torch

POOLINGS = ("mean", "cls", "last")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``hidden`` (B, T, D) into (B, D).

    Args:
        attention_mask: (B, T) 1 on real tokens.
        pool_mask: (B, T) 1 on tokens mean pooling may use (real tokens minus excluded prompt tokens).
        mode: mean | cls (first real token) | last (last real token).
    """
    if mode == "mean":
        weights = pool_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        summed = (hidden * weights).sum(dim=1)  # (B, D)
        return summed / weights.sum(dim=1).clamp(min=1e-9)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    real = attention_mask.bool()
    if mode == "cls":
        # first real token: smallest position with mask 1 (index 0 under right padding)
        index = torch.where(real, positions, attention_mask.shape[1]).min(dim=1).values  # (B,)
    elif mode == "last":
        index = torch.where(real, positions, -1).max(dim=1).values  # (B,)
    else:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]  # (B, D)

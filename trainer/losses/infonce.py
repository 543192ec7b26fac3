"""InfoNCE over in-batch and hard negatives (the contrastive loss of DPR, E5, BGE, GTE).

    pytest tests/test_losses.py -k infonce

For query i with positive p_i, candidates C = every passage of the gathered batch (each query's positive and
hard negatives, grouped per query), and temperature tau:

    L_q2p = -1/B sum_i log( exp(s(q_i, p_i)/tau) / sum_{c in C} exp(s(q_i, c)/tau) )

Optional symmetric term (passage -> query over the positives, GTE/"bidirectional" InfoNCE):

    L_p2q = -1/B sum_i log( exp(s(p_i, q_i)/tau) / sum_j exp(s(p_i, q_j)/tau) )

Candidates whose text equals q_i's positive (an in-batch copy) are masked out of q_i's denominator, else they
would be false negatives. One convention everywhere: scores are divided by ``temperature``; a learnable
temperature is stored as log(1/tau) and clamped to tau >= 0.01.

Shapes: ``query`` (B, D) on this process; ``passages`` (B*(1+k), D) on this process, query-major
``[p_0, n_0_1..n_0_k, p_1, ...]``. Gathering to the global batch happens in ``trainer.distributed``.
Reference: van den Oord et al. 2018 (CPC); Karpukhin et al. 2020 (DPR); Li et al. 2023 (GTE).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from trainer.distributed import gather_no_grad, gather_with_grad, local_offset


class InfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.05, learnable_temperature: bool = False, symmetric: bool = False,
                 mask_duplicate_positives: bool = True, weight: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.symmetric = symmetric
        self.mask_duplicate_positives = mask_duplicate_positives
        self.weight = weight
        log_inv = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.log_inv_temperature = nn.Parameter(log_inv)
        else:
            self.register_buffer("log_inv_temperature", log_inv)

    @property
    def temperature(self) -> float:
        return float(1.0 / self.log_inv_temperature.detach().exp())

    def scale(self) -> torch.Tensor:
        return self.log_inv_temperature.clamp(max=math.log(100.0)).exp()  # 1/tau, tau >= 0.01

    def forward(self, query: torch.Tensor, passages: torch.Tensor,
                passage_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """query (B, D), passages (B*(1+k), D), passage_ids (B*(1+k),) text ids -> scalar loss."""
        batch = query.shape[0]
        group = passages.shape[0] // batch  # 1 + k
        if passages.shape[0] != batch * group:
            raise ValueError(f"passages {tuple(passages.shape)} is not a multiple of queries {tuple(query.shape)}")
        all_passages = gather_with_grad(passages)  # (W*B*(1+k), D)
        scores = query @ all_passages.T * self.scale()  # (B, W*B*(1+k))
        # Query i of this process is global query offset+i; its positive sits at (offset+i)*(1+k).
        labels = (local_offset(batch) + torch.arange(batch, device=query.device)) * group  # (B,)
        if self.mask_duplicate_positives and passage_ids is not None:
            all_ids = gather_no_grad(passage_ids)  # (W*B*(1+k),)
            positive_ids = passage_ids[torch.arange(batch, device=query.device) * group]  # (B,)
            copies = all_ids.unsqueeze(0) == positive_ids.unsqueeze(1)  # (B, W*B*(1+k))
            copies[torch.arange(batch, device=query.device), labels] = False  # keep the positive itself
            scores = scores.masked_fill(copies, float("-inf"))
        loss = F.cross_entropy(scores.float(), labels)
        if self.symmetric:
            positives = passages[::group]  # (B, D)
            all_queries = gather_with_grad(query)  # (W*B, D)
            p2q = positives @ all_queries.T * self.scale()  # (B, W*B)
            loss = (loss + F.cross_entropy(p2q.float(), labels // group)) / 2
        return loss

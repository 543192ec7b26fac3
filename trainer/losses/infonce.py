"""InfoNCE over in-batch and hard negatives (the contrastive loss of DPR, E5, BGE, GTE).

    pytest tests/test_losses.py -k infonce

For query i with positive p_i, candidates C = every passage of the gathered batch (each query's positive and
hard negatives, grouped per query), and temperature tau:

    L_q2p = -1/B sum_i log( exp(s(q_i, p_i)/tau) / sum_{c in C} exp(s(q_i, c)/tau) )

Optional symmetric term (passage -> query over the positives, GTE/"bidirectional" InfoNCE):

    L_p2q = -1/B sum_i log( exp(s(p_i, q_i)/tau) / sum_j exp(s(p_i, q_j)/tau) )

Candidates whose text is a positive of q_i's query text (an in-batch copy of its positive, or the positive of
another row with the same query text, ``positive_ids``) are masked out of q_i's denominator, else they would be
false negatives; in the symmetric term, queries with q_i's text are masked out of p_i's. Label tasks
(classification or clustering as "same label" retrieval) pass label ids: a candidate with q_i's (task, label)
(``passage_labels[c] == query_labels[i] >= 0``) is a positive too and is masked the same way, in both terms;
hard negatives carry no label (-1) and stay negatives. One convention
everywhere: scores are divided by ``temperature``, tau >= 0.01 (``MIN_TEMPERATURE``: a fixed temperature below
it is refused, a learnable one, stored as log(1/tau), is clamped there and ``temperature`` reports the clamped
value that is used).

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


MIN_TEMPERATURE = 0.01  # 1/tau <= 100: sharper distributions overflow bf16/fp16 logits and stall training


class InfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.05, learnable_temperature: bool = False, symmetric: bool = False,
                 mask_duplicate_positives: bool = True, weight: float = 1.0) -> None:
        super().__init__()
        if not temperature >= MIN_TEMPERATURE:
            raise ValueError(f"loss.temperature must be >= {MIN_TEMPERATURE} (scores are cos / temperature), "
                             f"got {temperature}")
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
        """The temperature the loss uses (a learnable one clamped at ``MIN_TEMPERATURE``)."""
        return float(1.0 / self.scale().detach())

    def scale(self) -> torch.Tensor:
        return self.log_inv_temperature.clamp(max=math.log(1.0 / MIN_TEMPERATURE)).exp()  # 1/tau

    def forward(self, query: torch.Tensor, passages: torch.Tensor, passage_ids: Optional[torch.Tensor] = None,
                positive_ids: Optional[torch.Tensor] = None, query_ids: Optional[torch.Tensor] = None,
                query_labels: Optional[torch.Tensor] = None, passage_labels: Optional[torch.Tensor] = None,
                ) -> torch.Tensor:
        """query (B, D), passages (B*(1+k), D) -> scalar loss.

        Args:
            passage_ids: (B*(1+k),) text ids of ``passages``; in-batch copies of a positive are masked.
            positive_ids: (B, P) text ids of every positive of each query's text (padded with -1); masked too.
            query_ids: (B,) text ids of the queries; the symmetric term masks other queries with the same text.
            query_labels: (B,) label ids of the queries (-1: none); passage_labels: (B*(1+k),) label ids of the
                passages (a positive has its query's label, a hard negative -1). Same-label candidates are masked.
        """
        batch = query.shape[0]
        group = passages.shape[0] // batch  # 1 + k
        if passages.shape[0] != batch * group:
            raise ValueError(f"passages {tuple(passages.shape)} is not a multiple of queries {tuple(query.shape)}")
        all_passages = gather_with_grad(passages)  # (W*B*(1+k), D)
        scores = query @ all_passages.T * self.scale()  # (B, W*B*(1+k))
        # Query i of this process is global query offset+i; its positive sits at (offset+i)*(1+k).
        rows = torch.arange(batch, device=query.device)
        labels = (local_offset(batch) + rows) * group  # (B,)
        if self.mask_duplicate_positives and passage_ids is not None:
            own = passage_ids[rows * group].unsqueeze(1)  # (B, 1)
            positives = own if positive_ids is None else torch.cat([own, positive_ids.to(own)], dim=1)  # (B, 1+P)
            scores = scores.masked_fill(self._false_negatives(gather_no_grad(passage_ids), positives, labels),
                                        float("-inf"))
        labelled = self.mask_duplicate_positives and query_labels is not None and passage_labels is not None
        if labelled:
            scores = scores.masked_fill(same_label(query_labels, gather_no_grad(passage_labels), labels), float("-inf"))
        loss = F.cross_entropy(scores.float(), labels)
        if self.symmetric:
            p2q = passages[::group] @ gather_with_grad(query).T * self.scale()  # (B, W*B)
            if self.mask_duplicate_positives and query_ids is not None:
                p2q = p2q.masked_fill(self._false_negatives(gather_no_grad(query_ids), query_ids.unsqueeze(1),
                                                            labels // group), float("-inf"))
            if labelled:  # p_i carries q_i's label: queries of that label are not its negatives
                p2q = p2q.masked_fill(same_label(query_labels, gather_no_grad(query_labels), labels // group),
                                      float("-inf"))
            loss = (loss + F.cross_entropy(p2q.float(), labels // group)) / 2
        return loss

    @staticmethod
    def _false_negatives(candidates: torch.Tensor, positives: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, N) bool: candidate ids (N,) equal to one of row i's positive ids (B, P), except row i's label."""
        mask = torch.zeros(positives.shape[0], candidates.shape[0], dtype=torch.bool, device=candidates.device)
        for column in positives.T:  # P passes of (B, N) instead of one (B, N, P) tensor
            mask |= candidates.unsqueeze(0) == column.unsqueeze(1)
        mask[torch.arange(len(labels), device=labels.device), labels] = False  # keep the positive itself
        return mask


def same_label(row_labels: torch.Tensor, candidate_labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: candidate c has row i's label (ids >= 0; -1 matches nothing), except column ``keep[i]``.

    Args:
        row_labels: (B,) label id per row; candidate_labels: (N,); keep: (B,) each row's own positive column.
    """
    mask = (candidate_labels.unsqueeze(0) == row_labels.unsqueeze(1)) & (row_labels.unsqueeze(1) >= 0)  # (B, N)
    mask[torch.arange(len(keep), device=keep.device), keep] = False
    return mask

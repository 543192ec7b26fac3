"""The training micro-batch: what the collator writes, the teacher adds and the objective reads.

    pytest tests/test_data.py tests/test_teachers.py

One typed record instead of a dict whose keys several modules agree on by convention: a field the objective
reads and no collator writes fails at import, not as a ``KeyError`` mid-run. B queries, each with its positive
and k hard negatives, passages query-major (``[q0 pos, q0 negs..., q1 pos, ...]``). Unit tests build partial
batches (ids and labels absent), so everything after the token features is optional; the loss then masks less.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

Features = dict[str, torch.Tensor]  # tokenizer output: input_ids, attention_mask, ... (N, T)


@dataclass
class Batch:
    query: Features  # (B, Tq)
    passage: Features  # (B*(1+k), Tp)
    index: Optional[torch.Tensor] = None  # (B,) dataset row of each query (teacher targets are looked up by it)
    query_ids: Optional[torch.Tensor] = None  # (B,) text id of each query (rows sharing a query text)
    passage_ids: Optional[torch.Tensor] = None  # (B*(1+k),) text id of each passage (in-batch copies)
    positive_ids: Optional[torch.Tensor] = None  # (B, P) text ids of every positive of the query text, -1 padded
    query_labels: Optional[torch.Tensor] = None  # (B,) label id (trainer.data.dataset.label_id), -1 without
    passage_labels: Optional[torch.Tensor] = None  # (B*(1+k),) a positive's label is its query's; negatives -1
    # Teacher targets (trainer.teachers.targets): a bi-encoder teacher's embeddings, or scores from the data or
    # a cross-encoder; ``teacher_skipped`` when distill.tasks leaves this batch's task to the contrastive loss.
    teacher_query: Optional[torch.Tensor] = None  # (B, D_t)
    teacher_passage: Optional[torch.Tensor] = None  # (B*(1+k), D_t)
    teacher_scores: Optional[torch.Tensor] = None  # (B, 1+k)
    teacher_skipped: bool = False
    # distill.teacher_bank: N passages drawn from every training passage the teacher embedded, and their text ids.
    teacher_bank: Optional[torch.Tensor] = None  # (N, D_t)
    teacher_bank_ids: Optional[torch.Tensor] = None  # (N,)
    # distill.unlabeled (trainer.teachers.unlabeled): U texts of one source and the teacher's embeddings of them.
    unlabeled: Optional[Features] = None  # (U, Tp)
    teacher_unlabeled: Optional[torch.Tensor] = None  # (U, D_t)

    @property
    def has_teacher_embeddings(self) -> bool:
        return self.teacher_query is not None and self.teacher_passage is not None

    def to(self, device: Any, non_blocking: bool = False) -> "Batch":
        """A copy on ``device`` (``accelerate.utils.send_to_device`` calls this)."""
        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value.to(device, non_blocking=non_blocking)
            if isinstance(value, Mapping):  # token features: a dict or a tokenizer's BatchEncoding
                return {k: move(v) for k, v in value.items()}
            return value
        return dataclasses.replace(self, **{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

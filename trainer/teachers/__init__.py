"""Teachers: one protocol for models whose scores or embeddings a student learns from.

    pytest tests/test_teachers.py

``Teacher`` is what training needs from a teacher: ``embed(texts, side, tasks)`` -> (N, D_t) embeddings (bi-encoders)
and ``score(queries, passages)`` -> (N,) pair scores (every kind that can). Teachers run in eval mode under
``no_grad``, never reach the optimizer and never enter ``accelerator.prepare``; ``trainer.teachers.targets``
runs them once over the training texts before training and caches what they say on disk.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Teacher(Protocol):
    name: str  # identifies the teacher in cache keys and logs
    dim: Optional[int]  # embedding dimension; None for teachers that only score

    def embed(self, texts: Sequence[str], side: str, tasks: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
        """(N, D_t) float32 embeddings; raises ``NotImplementedError`` for score-only teachers."""
        ...

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """(N,) float32 scores of the pairs (queries[i], passages[i])."""
        ...


from trainer.teachers.bi_encoder import BiEncoderTeacher  # noqa: E402
from trainer.teachers.cross_encoder import CrossEncoderTeacher  # noqa: E402
from trainer.teachers.precomputed import PrecomputedTeacher  # noqa: E402

__all__ = ["Teacher", "BiEncoderTeacher", "CrossEncoderTeacher", "PrecomputedTeacher"]

"""Precomputed teacher: scores that already sit in the training data (``pos_scores`` / ``neg_scores``).

    python -m trainer.train experiment=distill teacher=precomputed distill=margin_mse data.num_negatives=4

The rows were scored offline (e.g. by ``python -m trainer.mine`` with a cross-encoder); the collator puts them in
each batch as ``teacher_scores`` (B, 1+k), aligned with ``[positive, negatives...]``. No model runs at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from trainer.teachers.kinds import register_teacher_kind


@dataclass
class PrecomputedTeacherConfig:
    """``teacher/precomputed_schema`` (conf/teacher/precomputed.yaml)."""
    _target_: str = "trainer.teachers.PrecomputedTeacher"
    name: str = "precomputed"


register_teacher_kind("precomputed", PrecomputedTeacherConfig)


class PrecomputedTeacher:
    def __init__(self, name: str = "precomputed") -> None:
        self.name = name
        self.dim: Optional[int] = None

    def to(self, device: object) -> "PrecomputedTeacher":
        return self

    def embed(self, texts: Sequence[str], side: str, tasks: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
        raise NotImplementedError("precomputed teachers carry scores only (pos_scores / neg_scores in the data)")

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        raise NotImplementedError("precomputed scores are read from the rows' pos_scores / neg_scores, "
                                  "not computed for new pairs")

"""Cross-encoder teacher: ``AutoModelForSequenceClassification`` reads each (query, passage) pair jointly.

    python -c "from trainer.teachers import CrossEncoderTeacher; \
               print(CrossEncoderTeacher('path/to/reranker').score(['q'], ['p']))"

It scores pairs only (no embeddings), so it supervises MarginMSE and listwise KL over each query's own
candidates (positive and hard negatives); ``trainer.teachers.targets`` scores every training pair once and caches
the scores on disk. One output logit is the score; with two (not relevant / relevant) the score is their difference.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from omegaconf import MISSING
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from trainer.models.encoder import DTYPES
from trainer.teachers.kinds import register_teacher_kind


@dataclass
class CrossEncoderTeacherConfig:
    """``teacher/cross_encoder_schema`` (conf/teacher/cross_encoder.yaml)."""
    _target_: str = "trainer.teachers.CrossEncoderTeacher"
    name_or_path: str = MISSING  # a sequence-classification model folder or hub name
    max_length: int = 320  # query + passage tokens
    dtype: str = "float32"
    batch_size: int = 32
    cache_root: Optional[str] = None  # pair scores cached here by trainer.teachers.targets (None = recompute)
    trust_remote_code: bool = False


register_teacher_kind("cross_encoder", CrossEncoderTeacherConfig)


class CrossEncoderTeacher:
    def __init__(self, name_or_path: str, *, max_length: int = 320, dtype: str = "float32", batch_size: int = 32,
                 trust_remote_code: bool = False, cache_root: Optional[str] = None) -> None:
        """``cache_root``: where ``trainer.teachers.targets`` keeps this teacher's pair scores."""
        self.model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True)
        self.model.eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        self.name = Path(name_or_path).name or str(name_or_path)
        self.source = str(name_or_path)
        self.dim: Optional[int] = None
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_root = cache_root

    def fingerprint(self) -> str:
        """Hash of the weights' bytes, the tokenizer and the max length: the pair-score cache key. A reranker
        retrained at the same path gets a new key (as the embedding cache keys encoders)."""
        from types import SimpleNamespace

        from trainer.encoding import model_fingerprint, stable_hash

        identity = SimpleNamespace(backbone=self.model, tokenizer=self.tokenizer)  # what model_fingerprint reads
        return stable_hash({"model": model_fingerprint(identity), "max_length": self.max_length})[:24]

    def to(self, device: torch.device | str) -> "CrossEncoderTeacher":
        self.model.to(device)
        return self

    def embed(self, texts: Sequence[str], side: str, tasks: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
        raise NotImplementedError("a cross-encoder scores pairs and has no embeddings: use listwise_kl or "
                                  "margin_mse, not embedding or similarity distillation")

    @torch.no_grad()
    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """(N,) float32 logits of the pairs, in input order (batched by length to cut padding)."""
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
        order = sorted(range(len(queries)), key=lambda i: -(len(queries[i]) + len(passages[i])))
        out = np.zeros(len(queries), dtype=np.float32)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            feats = self.tokenizer([queries[i] for i in idx], [passages[i] for i in idx], truncation="only_second",
                                   max_length=self.max_length, padding=True, return_tensors="pt").to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = self.model(**feats).logits.float()  # (b, labels)
            scores = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]
            out[idx] = scores.cpu().numpy()
        return out

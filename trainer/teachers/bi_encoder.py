"""Bi-encoder teacher: any ``Encoder`` with its own tokenizer, prompts, pooling and dimension.

    python -c "from trainer.teachers import BiEncoderTeacher; from trainer.assets import mpnet; \
               print(BiEncoderTeacher(str(mpnet())).embed(['hello'], 'query').shape)"     # (1, 768)

Embeddings go through ``trainer.encoding.encode_cached``: every text is encoded once per (teacher weights,
tokenizer, prompts, pooling, max length, side, task) and kept on disk under ``cache_root``, sharded over
processes when several run. The teacher's tokenizer reads the raw text; student and teacher never share tokens.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from omegaconf import MISSING

from trainer.encoding import encode_cached, encoder_fingerprint
from trainer.models.encoder import Encoder, EncoderSpec
from trainer.models.prompts import PromptSpec
from trainer.teachers.kinds import register_teacher_kind


@dataclass
class BiEncoderTeacherConfig:
    """``teacher/bi_encoder_schema`` (conf/teacher/mpnet.yaml)."""
    _target_: str = "trainer.teachers.BiEncoderTeacher"
    name_or_path: str = MISSING  # model folder or hub name
    pooling: str = "mean"
    normalize: bool = True
    max_length_query: int = 64
    max_length_passage: int = 256
    query_prefix: str = ""
    passage_prefix: str = ""
    dtype: str = "float32"
    precision: str = "fast"  # autocast: fast = bf16 where native (CUDA, AMX/AVX512-BF16 CPUs) | float32
    batch_size: int = 32
    cache_root: Optional[str] = None  # on-disk cache of teacher embeddings (None = recompute)
    trust_remote_code: bool = False
    chunk_size: int = 256  # texts per cache file: a killed run keeps every finished chunk


register_teacher_kind("bi_encoder", BiEncoderTeacherConfig)


class BiEncoderTeacher:
    """Frozen ``Encoder`` in eval mode; ``embed`` is cached on disk when ``cache_root`` is set."""

    def __init__(self, name_or_path: str, *, pooling: str = "mean", normalize: bool = True,
                 max_length_query: int = 64, max_length_passage: int = 256, query_prefix: str = "",
                 passage_prefix: str = "", dtype: str = "float32", batch_size: int = 32,
                 cache_root: Optional[str] = None, trust_remote_code: bool = False, chunk_size: int = 256,
                 precision: str = "fast") -> None:
        """``precision``: the autocast rule of ``trainer.encoding.autocast_dtype`` (``fast`` = bf16 where the
        hardware computes it natively, as mining does; part of the cache key)."""
        spec = EncoderSpec(pooling=pooling, normalize=normalize, max_length_query=max_length_query,
                           max_length_passage=max_length_passage,
                           prompts=PromptSpec(query_prefix=query_prefix, passage_prefix=passage_prefix))
        self.encoder = Encoder.from_pretrained(name_or_path, spec, dtype=dtype, trust_remote_code=trust_remote_code)
        self.encoder.eval().requires_grad_(False)
        self.name = Path(name_or_path).name or str(name_or_path)
        self.dim: Optional[int] = self.encoder.dim
        self.batch_size = batch_size
        self.cache_root = cache_root
        self.chunk_size = chunk_size  # texts per cache file: a killed run keeps every finished chunk
        self.precision = precision
        self._fingerprint: Optional[str] = None

    def fingerprint(self) -> str:
        """Hash of weights, tokenizer and spec (what the cache key is made of)."""
        if self._fingerprint is None:
            self._fingerprint = encoder_fingerprint(self.encoder)
        return self._fingerprint

    def to(self, device: torch.device | str) -> "BiEncoderTeacher":
        self.encoder.to(device)
        return self

    @torch.no_grad()
    def embed(self, texts: Sequence[str], side: str, tasks: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
        """(N, D_t) float32; texts are grouped by task (a task may carry its own instruction)."""
        texts = list(texts)
        tasks = list(tasks) if tasks is not None else [None] * len(texts)
        groups: dict[Optional[str], list[int]] = defaultdict(list)
        for i, task in enumerate(tasks):
            groups[task].append(i)
        out = np.zeros((len(texts), self.encoder.dim), dtype=np.float32)
        for task, rows in groups.items():
            out[rows] = encode_cached(self.encoder, [texts[i] for i in rows], side, cache_root=self.cache_root,
                                      task=task, batch_size=self.batch_size, chunk_size=self.chunk_size,
                                      precision=self.precision)
        return out

    @torch.no_grad()
    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """(N,) similarity of each (query, passage) pair: dot product (cosine when normalised)."""
        q = self.embed(queries, "query")
        p = self.embed(passages, "passage")
        return (q * p).sum(axis=1)

"""Unlabeled text for distillation: every text the teacher can embed is training signal, no labels needed.

    python data/prepare_text.py distill                          # -> data/build/distill/<source>.jsonl {"text"}
    python -m trainer.train experiment=distill                   # distill.unlabeled.files lists them

Before training the teacher embeds a seeded sample of the files once (through its on-disk cache). Each training
step then also carries ``batch_size`` of these texts, all from one source (a batch of tweets, of review snippets,
of article windows: fine-grained neighbours, not "a tweet is not an article"); the student's in-batch similarity
distribution over them follows the teacher's (``UnlabeledKL``), and embedding distillation, when on, covers them
too. Which texts a step gets depends only on the seed and the step's own training rows, so a resumed run draws
exactly what the uninterrupted run would. Batches gain:

    unlabeled          token features of the texts (passage side), (U, T)
    teacher_unlabeled  (U, D_t) the teacher's embeddings of the same texts
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from trainer.data.batch import Batch
from trainer.data.schema import DataError


def read_texts(path: str | Path, limit: Optional[int], seed: int) -> list[str]:
    """Distinct non-empty ``text`` fields of a JSONL file; with ``limit``, a seeded sample of that many."""
    texts: dict[str, None] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not JSON ({err.msg})") from None
            text = row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise DataError(f"{path}:{number}: field 'text': expected a string, got {type(text).__name__}")
            if text.strip():
                texts[text] = None
    ordered = list(texts)
    if limit is not None and len(ordered) > limit:
        keep = np.random.default_rng([seed, len(ordered)]).choice(len(ordered), size=limit, replace=False)
        ordered = [ordered[i] for i in sorted(keep)]
    return ordered


class UnlabeledTexts:
    """Texts per source with the teacher's embeddings; ``draw`` picks a step's texts from its training rows."""

    def __init__(self, sources: dict[str, list[str]], embeddings: dict[str, np.ndarray], batch_size: int,
                 seed: int) -> None:
        self.names = sorted(sources)
        self.sources, self.embeddings = sources, embeddings  # name -> texts (N,), name -> (N, D_t)
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        return sum(len(t) for t in self.sources.values())

    def draw(self, index: Sequence[int]) -> tuple[list[str], np.ndarray]:
        """(texts, teacher embeddings (U, D_t)) for the step whose rows are ``index``: one source, U distinct texts."""
        rng = np.random.default_rng([self.seed, 7, *[int(i) for i in index]])
        name = self.names[int(rng.integers(len(self.names)))]
        texts = self.sources[name]
        rows = rng.choice(len(texts), size=min(self.batch_size, len(texts)), replace=False)
        return [texts[i] for i in rows], self.embeddings[name][rows]

    def annotate(self, batch: Batch, tokenize: Callable[..., dict[str, Any]]) -> Batch:
        texts, teacher = self.draw(batch.index.tolist())
        batch.unlabeled = tokenize(texts, "passage")
        batch.teacher_unlabeled = torch.from_numpy(np.ascontiguousarray(teacher))  # (U, D_t)
        return batch


def build_unlabeled(cfg: Any, teacher: Any, seed: int, log: Callable[[str], None] = print) -> Optional[UnlabeledTexts]:
    """``cfg`` is ``distill.unlabeled``; None when it lists no files or its weight is 0."""
    if cfg is None or not cfg.files or cfg.weight <= 0:
        return None
    if teacher.dim is None:
        raise ValueError(f"distill.unlabeled needs a bi-encoder teacher (its embeddings); {teacher.name} scores pairs")
    sources: dict[str, list[str]] = {}
    for path in cfg.files:
        name = Path(path).stem
        if name in sources:
            raise ValueError(f"distill.unlabeled.files: two files named {name!r} ({path})")
        texts = read_texts(path, cfg.max_texts_per_file, seed)
        if len(texts) < 2:
            raise DataError(f"{path}: {len(texts)} distinct texts; unlabeled distillation needs at least 2")
        sources[name] = texts
    total = sum(map(len, sources.values()))
    log(f"teacher {teacher.name}: embedding {total} unlabeled texts from {len(sources)} sources "
        f"({', '.join(f'{k} {len(v)}' for k, v in sources.items())}) (cached)")
    embeddings = {name: np.asarray(teacher.embed(texts, "passage"), dtype=np.float32)
                  for name, texts in sources.items()}
    return UnlabeledTexts(sources, embeddings, cfg.batch_size, seed)

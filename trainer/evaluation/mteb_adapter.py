"""Expose an exported checkpoint to the ``mteb`` package's encoder protocol, with the prompts it was trained with.

    pip install mteb      # needs internet for the task data; not a dependency of this project
    python -c "import mteb; from trainer.evaluation.mteb_adapter import MTEBModel; \
               m = MTEBModel('runs/demo/checkpoints/step-000100'); \
               mteb.evaluate(m, mteb.get_tasks(tasks=['SciFact']))"      # or mteb.MTEB(tasks=...).run(m)

Prompts per call: ``prompt_type`` query -> the query side (its instruction: the checkpoint's entry for the
MTEB task name, else for the task type, e.g. "Retrieval"); passage/document -> the passage side; no
prompt type (STS, classification, clustering, pair classification) -> ``symmetric_side`` (query, as E5 does).
Both call shapes are accepted: mteb 1.x ``encode(sentences, task_name=..., prompt_type=...)`` and mteb 2.x
``encode(dataloader, task_metadata=..., prompt_type=...)``; the result is always an (N, D) float32 array.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from trainer.evaluation.runner import Embedder, load_checkpoint

QUERY_TYPES = ("query",)
PASSAGE_TYPES = ("passage", "document", "corpus")


def _texts(inputs: Any) -> list[str]:
    """A list of strings, or an iterable of batches ``{"text": [...]}`` (mteb 2.x DataLoader)."""
    if isinstance(inputs, str):
        return [inputs]
    items = list(inputs) if not isinstance(inputs, list) else inputs
    if all(isinstance(x, str) for x in items):
        return items
    texts: list[str] = []
    for batch in items:
        if not isinstance(batch, Mapping) or "text" not in batch:
            raise TypeError(f"expected strings or batches with a 'text' field, got {type(batch).__name__}")
        texts.extend(batch["text"])
    return texts


def _task_type(task_name: Optional[str], task_metadata: Any, task_types: Mapping[str, str]) -> Optional[str]:
    if task_metadata is not None and getattr(task_metadata, "type", None):
        return str(task_metadata.type)
    if task_name in task_types:
        return task_types[task_name]
    if task_name:
        try:  # mteb installed: ask it
            import mteb

            return str(mteb.get_task(task_name).metadata.type)
        except Exception:  # noqa: BLE001 - mteb missing or the task unknown: no task type
            return None
    return None


class MTEBModel:
    """An mteb encoder over an exported checkpoint (prompts, pooling, normalisation from ``embedstill.json``)."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", batch_size: int = 64,
                 symmetric_side: str = "query", cache_root: Optional[str | Path] = None,
                 task_types: Optional[Mapping[str, str]] = None, allow_no_metadata: bool = False) -> None:
        if symmetric_side not in ("query", "passage"):
            raise ValueError(f"symmetric_side must be query or passage, got {symmetric_side!r}")
        self.encoder, self.metadata = load_checkpoint(checkpoint, device, allow_no_metadata)
        self.batch_size, self.symmetric_side = batch_size, symmetric_side
        self.cache_root = Path(cache_root) if cache_root is not None else None
        self.task_types = dict(task_types or {})
        self.name = Path(checkpoint).name

    def prompt_for(self, task_name: Optional[str], prompt_type: Any = None,
                   task_metadata: Any = None) -> tuple[str, Optional[str]]:
        """(side, instruction) for a call: the instruction keyed by task name, else by task type, else none."""
        kind = getattr(prompt_type, "value", prompt_type)
        side = "query" if kind in QUERY_TYPES else "passage" if kind in PASSAGE_TYPES else self.symmetric_side
        if kind is not None and kind not in QUERY_TYPES + PASSAGE_TYPES:
            raise ValueError(f"unknown prompt_type {prompt_type!r}")
        if side != "query":
            return side, None
        instructions = self.encoder.spec.prompts.instructions
        task_type = _task_type(task_name, task_metadata, self.task_types)
        return side, instructions.get(task_name or "") or instructions.get(task_type or "")

    def encode(self, sentences: Iterable[str] | Any = None, *, task_name: Optional[str] = None,
               prompt_type: Any = None, task_metadata: Any = None, inputs: Any = None, **kwargs: Any) -> np.ndarray:
        """(N, D) float32 embeddings of the texts, encoded with this checkpoint's prompts for the task."""
        texts = _texts(sentences if sentences is not None else inputs)
        if task_name is None and task_metadata is not None:
            task_name = getattr(task_metadata, "name", None)
        side, instruction = self.prompt_for(task_name, prompt_type, task_metadata)
        embed = Embedder(self.encoder, None, instruction, self.cache_root, int(kwargs.get("batch_size",
                                                                                       self.batch_size)))
        return embed(texts, side)

    @property
    def mteb_model_meta(self) -> Any:
        """mteb's ``ModelMeta`` (name, revision = config hash, dim, max tokens, similarity); None without mteb."""
        try:
            from mteb.models.model_meta import ModelMeta
        except ImportError:
            return None
        spec = self.encoder.spec
        return ModelMeta.create_empty({
            "name": f"embedstill/{self.name}", "revision": str(self.metadata.get("config_hash") or "local"),
            "embed_dim": self.encoder.dim, "max_tokens": max(spec.max_length_query, spec.max_length_passage),
            "similarity_fn_name": "cosine", "use_instructions": bool(spec.prompts.instructions),
            "framework": ["PyTorch"], "open_weights": True, "adapted_from": self.metadata.get("base_model")})

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N, D), (M, D) -> (N, M) cosine similarity."""
        a = np.asarray(a, dtype=np.float32)
        b = np.asarray(b, dtype=np.float32)
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return a @ b.T

    def similarity_pairwise(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N, D), (N, D) -> (N,) cosine of each pair."""
        return np.einsum("nd,nd->n", *(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
                                       for x in (np.asarray(a, np.float32), np.asarray(b, np.float32))))

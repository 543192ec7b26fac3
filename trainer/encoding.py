"""Sharded, cached encoding: encode each text once per (model, prompts, pooling, max length) and keep it on disk.

    python -c "from trainer.encoding import encode_cached; from trainer.models import Encoder; \
               from trainer.assets import minilm; e = Encoder.from_pretrained(str(minilm())); \
               print(encode_cached(e, ['a', 'b'], 'passage', cache_root='.cache/emb').shape)"

Layout: ``<root>/<key>/meta.json`` plus ``chunk-<n>.npz`` files, each holding ``ids`` (N,) int64 text ids and
``emb`` (N, D) float32. ``key`` hashes the model fingerprint (weights + tokenizer), the side's part of the
``EncoderSpec`` (its prompt, max length, pooling...), the side, the task and the autocast dtype (``precision``),
so a changed model or prompt never reads stale vectors, while a new query prompt keeps the (expensive) passage cache.
Chunks are written to a temporary file and renamed, one by one, so a run killed halfway resumes after the last
complete chunk; a chunk damaged on disk is reported with its path, set aside and its texts encoded again. Under
several processes each rank encodes a contiguous shard of every chunk, the shards are gathered so every rank holds
the same array, and only rank 0 writes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from trainer.data.dataset import text_id
from trainer.distributed import gather_no_grad, world
from trainer.io import atomic_write_bytes, save_npz_atomic  # noqa: F401 (save_npz_atomic re-exported)
from trainer.models.encoder import Encoder
from trainer.runtime import PRECISIONS, autocast_dtype, native_cpu_bf16  # noqa: F401 (re-exported)

CACHE_VERSION = 1
log = logging.getLogger(__name__)


class EmbeddingError(ValueError):
    """Non-finite or all-zero embeddings came out of the encoder."""


def stable_hash(obj: Any) -> str:
    """sha256 hex of the JSON form (keys sorted): equal on every process and every run."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(encoder: Encoder) -> str:
    """Hash of the weights (their bytes, so in-memory training updates count too) and the tokenizer.

    Memoised on the encoder until a weight tensor is replaced or modified in place (``Tensor._version``, which
    every optimizer step and ``load_state_dict`` bump).
    """
    state = encoder.backbone.state_dict()
    stamp = tuple((t.data_ptr(), t._version) for t in state.values())
    memo = getattr(encoder, "_fingerprint_memo", None)
    if memo is not None and memo[0] == stamp and memo[1] is encoder.tokenizer:
        return memo[2]
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in state.items():
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    tok = encoder.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        # Truncation and padding settings are call state (set by every tokenizer call), not identity.
        rules = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        h.update(json.dumps(rules, sort_keys=True).encode())
    else:
        h.update(f"{type(tok).__name__}:{tok.name_or_path}:{len(tok)}".encode())
    encoder._fingerprint_memo = (stamp, tok, h.hexdigest())  # type: ignore[attr-defined]
    return h.hexdigest()


def side_spec(encoder: Encoder, side: str) -> dict[str, Any]:
    """The parts of ``encoder.spec`` that shape one side's embeddings (a query prompt never touches passages)."""
    spec = encoder.spec.to_dict()
    prompts = spec.pop("prompts")
    spec.pop("max_length_query"), spec.pop("max_length_passage")
    spec["max_length"] = encoder.spec.max_length(side)
    if side == "passage":
        spec["prompts"] = {"passage_prefix": prompts["passage_prefix"]}
    else:
        spec["prompts"] = {k: v for k, v in prompts.items() if k != "passage_prefix"}
    return spec


def encoder_fingerprint(encoder: Encoder) -> str:
    """Hash of model identity (weights + tokenizer) and ``encoder.spec`` (pooling, prompts, max lengths)."""
    return stable_hash({"model": model_fingerprint(encoder), "spec": encoder.spec.to_dict()})[:32]


def text_keys(texts: Sequence[str], instructions: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
    """(N,) int64 content ids; a per-text instruction is part of the key (it changes the embedding)."""
    if instructions is None:
        return np.fromiter((text_id(t) for t in texts), dtype=np.int64, count=len(texts))
    return np.fromiter((text_id(t if i is None else f"{i}\x00{t}") for t, i in zip(texts, instructions)),
                       dtype=np.int64, count=len(texts))


class EmbeddingCache:
    """On-disk cache of one (encoder, side, task) under ``root/<key>/``; see the module docstring."""

    def __init__(self, root: str | Path, encoder: Encoder, side: str, task: Optional[str] = None,
                 fingerprint: Optional[str] = None, precision: str = "auto") -> None:
        if side not in ("query", "passage"):
            raise ValueError(f"side must be query or passage, got {side!r}")
        self.fingerprint = fingerprint or model_fingerprint(encoder)
        self.settings = {"version": CACHE_VERSION, "model": self.fingerprint, "side": side, "task": task,
                         "spec": side_spec(encoder, side), "source": encoder.source,
                         "autocast": str(autocast_dtype(encoder.device, precision))}
        self.key = stable_hash({k: v for k, v in self.settings.items() if k != "source"})[:24]
        self.dir = Path(root) / self.key
        self.dim = encoder.dim
        self._ids = np.zeros(0, dtype=np.int64)  # sorted
        self._emb: Optional[np.ndarray] = None
        self._loaded: set[str] = set()

    def _chunks(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.npz")) if self.dir.exists() else []

    def _refresh(self) -> None:
        new = [p for p in self._chunks() if p.name not in self._loaded]
        if not new:
            return
        ids, embs = [self._ids], [] if self._emb is None else [self._emb]
        for path in new:
            self._loaded.add(path.name)
            chunk = self._read_chunk(path)
            if chunk is not None:
                ids.append(chunk[0])
                embs.append(chunk[1])
        if not embs:
            return
        all_ids, all_emb = np.concatenate(ids), np.concatenate(embs)
        all_ids, first = np.unique(all_ids, return_index=True)  # sorted, one row per text
        self._ids, self._emb = all_ids, np.ascontiguousarray(all_emb[first])

    def _read_chunk(self, path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(ids (N,), embeddings (N, D)) of one chunk; None for a damaged one, which is reported and set aside
        (rank 0 renames it ``*.npz.corrupt``), so its texts count as missing and are encoded again."""
        try:
            with np.load(path) as z:
                ids, emb = z["ids"], z["emb"]
            if ids.ndim != 1 or emb.shape != (len(ids), self.dim):
                raise ValueError(f"ids {ids.shape} and embeddings {emb.shape} do not fit dim {self.dim}")
        except Exception as err:  # noqa: BLE001 - any unreadable chunk: bad zip, truncated, wrong arrays
            log.warning("%s: corrupt embedding cache chunk (%s: %s): set aside, its texts are encoded again",
                        path, type(err).__name__, err)
            if world()[0] == 0:
                try:
                    os.replace(path, path.with_name(path.name + ".corrupt"))
                except OSError:
                    pass  # already set aside by another process
            return None
        return ids, emb

    def lookup(self, texts: list[str], instructions: Optional[Sequence[Optional[str]]] = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """(found mask (N,) bool, embeddings (found, D) float32 for the found texts, in input order)."""
        return self.lookup_keys(text_keys(texts, instructions))

    def lookup_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._refresh()
        if self._emb is None or not len(self._ids):
            return np.zeros(len(keys), dtype=bool), np.zeros((0, 0), dtype=np.float32)
        pos = np.clip(np.searchsorted(self._ids, keys), 0, len(self._ids) - 1)
        found = self._ids[pos] == keys
        return found, self._emb[pos[found]]

    def add(self, texts: list[str], embeddings: np.ndarray,
            instructions: Optional[Sequence[Optional[str]]] = None) -> None:
        self.add_keys(text_keys(texts, instructions), embeddings)

    def add_keys(self, keys: np.ndarray, embeddings: np.ndarray) -> None:
        """Write one chunk file atomically (temp file in the same folder, then rename)."""
        if len(keys) != len(embeddings):
            raise ValueError(f"{len(keys)} texts but {len(embeddings)} embeddings")
        if not len(keys):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            atomic_write_bytes(meta, json.dumps(self.settings, indent=2).encode())
        n = len(self._chunks())
        while (self.dir / f"chunk-{n:06d}.npz").exists():
            n += 1
        save_npz_atomic(self.dir / f"chunk-{n:06d}.npz", ids=np.asarray(keys, dtype=np.int64),
                        emb=np.asarray(embeddings, dtype=np.float32))


def check_embeddings(emb: np.ndarray, texts: Sequence[str], what: str = "") -> None:
    """Raise ``EmbeddingError`` naming how many rows are non-finite or all zero, and the first such text."""
    bad = ~np.isfinite(emb).all(axis=1) | ~(emb != 0).any(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise EmbeddingError(f"{int(bad.sum())} of {len(emb)} {what}embeddings are non-finite or all zero; "
                             f"first text: {texts[first][:80]!r} (check the model weights, dtype and input)")


def progress_bar(total: int, desc: str, unit: str = "text") -> Any:
    """A bar with count, rate and ETA on rank 0 for ``total`` items; silent on other ranks, for small jobs and
    when ``EMBEDSTILL_PROGRESS=0``. tqdm writes to stderr (the Hydra log keeps the summary lines)."""
    rank, _ = world()
    quiet = rank != 0 or total < 256 or os.environ.get("EMBEDSTILL_PROGRESS", "1") == "0"
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=quiet, mininterval=2.0)


def _encode_shard(encoder: Encoder, texts: list[str], side: str, task: Optional[str], batch_size: int,
                  instructions: Optional[list[Optional[str]]], dtype: Optional[torch.dtype],
                  bar: Any = None) -> np.ndarray:
    """Encode this rank's contiguous shard of ``texts``; return the full (N, D) array on every rank."""
    rank, size = world()
    n = len(texts)
    # Every rank encodes about n / size texts at once: rank 0's count times size is the global progress.
    tick = None if bar is None else (lambda k: bar.update(k * size))
    if size == 1:
        with torch.inference_mode():  # lighter than no_grad: no version counters or view tracking
            return encoder.encode(texts, side=side, batch_size=batch_size, task=task, instructions=instructions,
                                  autocast_dtype=dtype, progress=tick)
    per = -(-n // size)  # ceil: every rank sends the same number of rows (padding at the end)
    lo, hi = min(rank * per, n), min((rank + 1) * per, n)
    local = np.zeros((per, encoder.dim), dtype=np.float32)
    if hi > lo:
        with torch.inference_mode():
            local[:hi - lo] = encoder.encode(texts[lo:hi], side=side, batch_size=batch_size, task=task,
                                             instructions=None if instructions is None else instructions[lo:hi],
                                             autocast_dtype=dtype, progress=tick)
    device = encoder.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    gathered = gather_no_grad(torch.from_numpy(local).to(device))  # (size * per, D), rank-major
    return gathered.cpu().numpy()[:n]


def encode_cached(encoder: Encoder, texts: Sequence[str], side: str, *, cache_root: str | Path | None = None,
                  task: Optional[str] = None, batch_size: int = 64, accelerator: Any = None,
                  chunk_size: int = 4096, instructions: Optional[Sequence[Optional[str]]] = None,
                  precision: str = "auto") -> np.ndarray:
    """Embeddings (N, D) float32 of ``texts`` in input order, every rank the same.

    Texts already in the cache are read; the missing ones (deduplicated) are encoded ``chunk_size`` at a time,
    sharded over processes, and each finished chunk is written before the next starts. ``cache_root=None``
    encodes without a cache. ``accelerator`` is accepted for symmetry with the loop: the process group it set
    up is what ``trainer.distributed.world`` sees. ``precision``: see ``autocast_dtype`` (part of the cache key).
    """
    del accelerator  # the process group is read through trainer.distributed.world()
    texts = list(texts)
    instr = None if instructions is None else list(instructions)
    keys = text_keys(texts, instr)
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    dtype = autocast_dtype(encoder.device, precision)
    cache = EmbeddingCache(cache_root, encoder, side, task, precision=precision) if cache_root is not None else None
    found = np.zeros(len(texts), dtype=bool)
    if cache is not None:
        found, emb = cache.lookup_keys(keys)
        if found.any():
            out[found] = emb
    # Unique missing texts, in first-occurrence order (the same on every rank).
    _, first = np.unique(keys[~found], return_index=True)
    missing_rows = np.flatnonzero(~found)[np.sort(first)]
    rank, size = world()
    what = "encode " + ("queries" if side == "query" else f"{side}s") + (f" ({task})" if task else "") + (f" [{dtype}]".replace("torch.", "") if dtype else "")
    bar = progress_bar(len(missing_rows), what)
    for start in range(0, len(missing_rows), chunk_size):
        rows = missing_rows[start:start + chunk_size]
        chunk_texts = [texts[i] for i in rows]
        chunk_instr = None if instr is None else [instr[i] for i in rows]
        emb = _encode_shard(encoder, chunk_texts, side, task, batch_size, chunk_instr, dtype, bar)
        check_embeddings(emb, chunk_texts, f"{side} ")
        if cache is not None and rank == 0:
            cache.add_keys(keys[rows], emb)
        # Scatter to every occurrence of these texts (duplicates included).
        sorter = np.argsort(keys[rows])
        hit = ~found & np.isin(keys, keys[rows])
        out[hit] = emb[sorter[np.searchsorted(keys[rows], keys[hit], sorter=sorter)]]
    bar.close()
    if size > 1:
        torch.distributed.barrier()  # rank 0's chunks are on disk before anyone looks the cache up again
    check_embeddings(out, texts, f"{side} ")
    return out

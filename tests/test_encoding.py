"""Cached, sharded encoding: cache hits, invalidation, resume after a kill, two processes agree.

    pytest -q tests/test_encoding.py
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainer.distributed import close_process_group
from trainer.encoding import (EmbeddingCache, EmbeddingError, autocast_dtype, encode_cached, encoder_fingerprint,
                              native_cpu_bf16)
from trainer.models.encoder import Encoder, EncoderSpec

TEXTS = [f"w{i} w{(i * 7) % 200} the news w{(i * 3) % 200}" + " a" * (i % 5) for i in range(23)]


class Counting:
    """Wraps ``encoder.encode`` to count calls and texts encoded."""

    def __init__(self, encoder: Encoder, fail_on_call: int | None = None) -> None:
        self.encoder, self.inner = encoder, encoder.encode
        self.calls, self.texts, self.fail_on_call = 0, 0, fail_on_call
        encoder.encode = self  # type: ignore[method-assign]

    def __call__(self, texts: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt("killed")
        self.texts += len(texts)
        return self.inner(texts, *args, **kwargs)


def load(tiny_model: Path, **spec: Any) -> Encoder:
    return Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_passage=32, **spec))


def test_cache_hit_equals_plain_encode(tiny_model: Path, tmp_path: Path) -> None:
    enc = load(tiny_model)
    plain = enc.encode(TEXTS, side="passage")
    counter = Counting(enc)
    first = encode_cached(enc, TEXTS, "passage", cache_root=tmp_path, chunk_size=8)
    assert counter.calls == 3 and counter.texts == len(TEXTS)
    np.testing.assert_allclose(first, plain, atol=1e-6)
    second = encode_cached(enc, TEXTS[::-1] + TEXTS[:2], "passage", cache_root=tmp_path, chunk_size=8)
    assert counter.calls == 3  # no forward at all
    np.testing.assert_array_equal(second, np.concatenate([first[::-1], first[:2]]))
    # Duplicates are encoded once; the other side is a different cache.
    encode_cached(enc, TEXTS[:3] + TEXTS[:3], "query", cache_root=tmp_path)
    assert counter.texts == len(TEXTS) + 3


def test_cache_invalidated_by_prompt_and_weights(tiny_model: Path, tmp_path: Path) -> None:
    enc = load(tiny_model)
    key0 = EmbeddingCache(tmp_path, enc, "passage").key
    encode_cached(enc, TEXTS, "passage", cache_root=tmp_path)
    counter = Counting(enc)
    enc.spec.prompts.passage_prefix = "passage: "
    fp_prompt = encoder_fingerprint(enc)
    assert EmbeddingCache(tmp_path, enc, "passage").key != key0
    encode_cached(enc, TEXTS, "passage", cache_root=tmp_path)
    assert counter.texts == len(TEXTS)
    with torch.no_grad():
        next(enc.backbone.parameters()).add_(1e-3)  # a training step changes the weights in memory
    assert encoder_fingerprint(enc) != fp_prompt
    encode_cached(enc, TEXTS, "passage", cache_root=tmp_path)
    assert counter.texts == 2 * len(TEXTS)
    # The same model reloaded from disk (same weights, same spec) hits the first cache.
    fresh = load(tiny_model)
    assert EmbeddingCache(tmp_path, fresh, "passage").key == key0
    assert EmbeddingCache(tmp_path, fresh, "passage", task="x").key != key0
    assert EmbeddingCache(tmp_path, load(tiny_model, pooling="cls"), "passage").key != key0
    fresh.spec.prompts.query_prefix = "query: "  # a query prompt changes the query cache only
    assert EmbeddingCache(tmp_path, fresh, "passage").key == key0
    assert encoder_fingerprint(fresh) != encoder_fingerprint(load(tiny_model))


def test_precision_is_part_of_the_key(tiny_model: Path, tmp_path: Path) -> None:
    """bf16 vectors never answer a float32 lookup; ``fast`` is bf16 only where the CPU computes it natively."""
    enc = load(tiny_model)
    keys = {p: EmbeddingCache(tmp_path, enc, "passage", precision=p).key for p in ("auto", "float32", "bfloat16")}
    assert keys["auto"] == keys["float32"] != keys["bfloat16"]  # on CPU, auto is float32
    assert autocast_dtype(torch.device("cpu"), "fast") == (torch.bfloat16 if native_cpu_bf16() else None)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "avx512_bf16" in cpuinfo.read_text():  # Linux: the CPU flags the kernel reports
        assert native_cpu_bf16()
    assert autocast_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    exact = encode_cached(enc, TEXTS, "passage", cache_root=tmp_path, precision="float32")
    half = encode_cached(enc, TEXTS, "passage", cache_root=tmp_path, precision="bfloat16")
    assert 0 < np.abs(exact - half).max() < 0.05  # a separate, lower-precision cache entry
    with pytest.raises(ValueError, match="precision must be one of"):
        encode_cached(enc, TEXTS, "passage", precision="fp8")


def test_killed_encode_resumes(tiny_model: Path, tmp_path: Path) -> None:
    enc = load(tiny_model)
    plain = enc.encode(TEXTS, side="passage")
    counter = Counting(enc, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        encode_cached(enc, TEXTS, "passage", cache_root=tmp_path, chunk_size=10)
    assert counter.texts == 10  # the first chunk finished and was written
    assert not list(EmbeddingCache(tmp_path, enc, "passage").dir.glob(".tmp*"))
    counter.fail_on_call = None
    out = encode_cached(enc, TEXTS, "passage", cache_root=tmp_path, chunk_size=10)
    assert counter.texts == len(TEXTS)  # only the 13 missing texts were encoded again
    np.testing.assert_allclose(out, plain, atol=1e-6)


def test_non_finite_embeddings_raise(tiny_model: Path, tmp_path: Path) -> None:
    enc = load(tiny_model)
    inner = enc.encode

    def broken(texts: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        out = inner(texts, *args, **kwargs)
        out[1] = np.nan
        out[2] = 0.0
        return out

    enc.encode = broken  # type: ignore[method-assign]
    with pytest.raises(EmbeddingError, match=r"2 of 5 passage embeddings .*first text: 'w1 "):
        encode_cached(enc, TEXTS[:5], "passage", cache_root=tmp_path)
    assert not list(tmp_path.rglob("chunk-*"))  # nothing bad was cached


def init_two_ranks(rank: int, store: str) -> None:
    """Join a 2-process gloo group through a file store (``store`` is a fresh path): no port to pick or share."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)


def _rank_main(rank: int, store: str, model: str, root: str, out: str) -> None:
    init_two_ranks(rank, store)
    enc = Encoder.from_pretrained(model, EncoderSpec(max_length_passage=32))
    counter = Counting(enc)
    first = encode_cached(enc, TEXTS, "passage", cache_root=root, chunk_size=10)
    second = encode_cached(enc, TEXTS, "passage", cache_root=root, chunk_size=10)
    np.savez(f"{out}/rank{rank}.npz", first=first, second=second, texts=counter.texts)
    close_process_group()


def test_two_processes_shard_and_agree(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    torch.multiprocessing.start_processes(_rank_main, nprocs=2, start_method="fork",
                                          args=(str(tmp_path / "store"), str(tiny_model), str(tmp_path / "cache"),
                                                str(tmp_path)))
    plain = load(tiny_model).encode(TEXTS, side="passage")
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    for r in ranks:
        np.testing.assert_allclose(r["first"], plain, atol=1e-5)
        np.testing.assert_array_equal(r["second"], r["first"])
    np.testing.assert_array_equal(ranks[0]["first"], ranks[1]["first"])
    # Chunks of 10, 10, 3 split 5/5, 5/5, 2/1: each rank encoded about half, and nothing the second time.
    assert int(ranks[0]["texts"]) == 12 and int(ranks[1]["texts"]) == 11
    assert len(list((tmp_path / "cache").rglob("chunk-*.npz"))) == 3  # written once, by rank 0

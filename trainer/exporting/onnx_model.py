"""ONNX graph of an encoder: token ids in, pooled (normalised) embedding out; and a runner for it.

    python -m trainer.export checkpoint=runs/demo/checkpoints/step-000090

The graph holds the backbone, the pooling and the L2 normalisation, so a deployment needs only a tokenizer
and ONNX Runtime. Inputs ``input_ids`` and ``attention_mask`` (plus ``pool_mask`` when prompt tokens are
excluded from pooling) are (batch, sequence) int64 with both axes dynamic; the output ``sentence_embedding``
is (batch, D) float32. Exported with the dynamo exporter (``torch.onnx.export(..., dynamo=True)``).
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from trainer.exporting.ort_optimize import session_options
from trainer.models.encoder import Encoder, EncoderSpec

OUTPUT_NAME = "sentence_embedding"  # "embedding" clashes with a value name inside BERT graphs


def graph_inputs(spec: EncoderSpec) -> list[str]:
    """The graph's inputs: pool_mask only when prompt tokens are left out of pooling."""
    names = ["input_ids", "attention_mask"]
    return names + ["pool_mask"] if spec.exclude_prompt_from_pooling else names


class PooledEmbedding(nn.Module):
    """``Encoder.forward`` with positional inputs, as the exporter traces it."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pool_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, pool_mask=pool_mask)  # (B, D)


def export_onnx(encoder: Encoder, path: Path, opset: int = 18) -> list[str]:
    """Write ``path`` (one .onnx file, weights inside); returns the input names."""
    encoder = encoder.eval()
    names = graph_inputs(encoder.spec)
    # Example of batch 2 with unequal lengths, so neither axis is specialised to a constant.
    feats = encoder.tokenize(["an example text for export", "short"], "passage")
    args = tuple(feats[n] for n in names)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {n: {0: batch, 1: sequence} for n in names}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")  # shared Dim across inputs
        program = torch.onnx.export(PooledEmbedding(encoder).eval(), args, dynamo=True, input_names=names,
                                    output_names=[OUTPUT_NAME], dynamic_shapes=dynamic, opset_version=opset,
                                    optimize=True, verbose=False)
    program.save(str(path))
    return names


def session(path: Path, threads: Optional[int] = None,
            spinning: bool = True) -> "onnxruntime.InferenceSession":  # noqa: F821
    """A CPU session set for throughput (see ``ort_optimize.session_options``); threads=None: physical cores."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads, spinning), providers=["CPUExecutionProvider"])


class ParityError(RuntimeError):
    """An exported graph's output differs from PyTorch's by the tolerance or more (the export fails)."""


class OnnxEncoder:
    """Encodes raw text with an ONNX model and the checkpoint's own tokenisation and prompts.

    Has ``Encoder.encode``'s signature, so ``evaluate_retrieval`` runs on it unchanged.
    """

    def __init__(self, model_path: Path, tokenizing: Encoder, threads: Optional[int] = None,
                 spinning: bool = True) -> None:
        self.session = session(model_path, threads, spinning)
        self.tokenizing = tokenizing  # only its tokenize() is used
        self.names = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def run(self, feats: dict[str, torch.Tensor]) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {n: feats[n].numpy() for n in self.names})[0]  # (B, D)

    def encode(self, texts: Sequence[str], side: str = "passage",
               instructions: Optional[Sequence[Optional[str]]] = None, batch_size: int = 64,
               task: Optional[str] = None) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # length-sorted, as Encoder.encode
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            feats = self.tokenizing.tokenize([texts[i] for i in idx], side,
                                             None if instructions is None else [instructions[i] for i in idx],
                                             [task] * len(idx))
            out[idx] = self.run(feats)
        return out


def varied_texts(seed_texts: Sequence[str], batch_size: int, rng: random.Random, max_words: int) -> list[str]:
    """``batch_size`` texts of very different lengths (1 word .. past the max length) from the seed texts' words."""
    words = [w for t in seed_texts for w in t.split()] or ["text"]
    lengths = [1, max_words] + [rng.randint(1, max_words) for _ in range(max(0, batch_size - 2))]
    return [" ".join(rng.choice(words) for _ in range(n)) for n in lengths[:batch_size]]


@torch.no_grad()
def verify(encoder: Encoder, onnx: OnnxEncoder, seed_texts: Sequence[str], batch_sizes: Sequence[int],
           tolerance: float, seed: int = 0) -> dict[str, object]:
    """Compare ONNX Runtime with ``Encoder.forward`` on the same features: batch sizes x sides x lengths.

    Raises ParityError when the max abs diff reaches ``tolerance`` (a real check: kept under ``python -O``).
    """
    encoder = encoder.eval()
    rng = random.Random(seed)
    worst, checked = 0.0, []
    for batch_size in batch_sizes:
        for side in ("query", "passage"):
            max_words = encoder.spec.max_length(side) + 8  # some rows get truncated
            feats = encoder.tokenize(varied_texts(seed_texts, batch_size, rng, max_words), side)
            expected = encoder(**feats).numpy()  # (B, D)
            got = onnx.run(feats)  # (B, D)
            diff = float(np.abs(got - expected).max())
            worst = max(worst, diff)
            checked.append({"batch": batch_size, "side": side, "seq_len": int(feats["input_ids"].shape[1]),
                            "max_abs_diff": diff})
    print(f"ONNX vs PyTorch: max abs diff {worst:.2e} over {len(checked)} batches "
          f"(batch sizes {list(batch_sizes)}, both sides, lengths 1..max) tolerance {tolerance:g}")
    if not worst < tolerance:  # also catches NaN
        raise ParityError(f"ONNX output differs from PyTorch by {worst:.2e} >= {tolerance:g} (verify.tolerance)")
    return {"max_abs_diff": worst, "tolerance": tolerance, "checked": checked}

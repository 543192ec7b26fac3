"""The sentence-transformers ONNX layout, a folder of its own inside an export folder.

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("deploy/news-minilm/sentence-transformers", backend="onnx")   # onnx/model.onnx
    model = SentenceTransformer("deploy/news-minilm/sentence-transformers", backend="onnx",
                                model_kwargs={"file_name": "model_qint8_avx512_vnni.onnx"})  # int8

A folder of its own because sentence-transformers loads ``<folder>/model.onnx`` before ``<folder>/onnx/model.onnx``:
at the export's root that is the pooled graph (inputs ``pool_mask``, output the embedding), which it cannot run.

sentence-transformers (through Optimum's ``ORTModelForFeatureExtraction``) runs ``onnx/model.onnx``: the backbone
alone, inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the backbone takes them), all
(batch, sequence) int64, output ``last_hidden_state`` (batch, sequence, hidden) float32; it then applies its own
modules from ``modules.json`` (``1_Pooling/config.json``, ``2_Normalize``) with the tokenizer and
``config.json`` of the folder's root. Its int8 file names follow ``export_dynamic_quantized_onnx_model``:
``model_qint8_<target>.onnx`` (dynamic int8 weights, here the x86 VNNI/AMX target).
"""
from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from trainer.exporting.onnx_model import ParityError
from trainer.models.checkpoint import write_sentence_transformers_files
from trainer.models.encoder import Encoder

ST_FOLDER = "sentence-transformers"  # inside the export folder: tokenizer, module files, onnx/
ST_DIR = "onnx"
ST_MODEL = "model.onnx"  # optimum.onnxruntime.ONNX_WEIGHTS_NAME
ST_INT8 = "model_qint8_avx512_vnni.onnx"  # sentence-transformers' name for dynamic int8 weights on x86
HIDDEN_OUTPUT = "last_hidden_state"


def backbone_inputs(encoder: Encoder) -> list[str]:
    """The graph's inputs: token_type_ids only when the backbone takes them (BERT yes, MPNet no)."""
    accepted = inspect.signature(encoder.backbone.forward).parameters
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in accepted else [])


class TokenEmbeddings(nn.Module):
    """The backbone with positional inputs: (B, T) ids and masks -> (B, T, D) token embeddings."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state


def st_features(feats: dict[str, torch.Tensor], names: Sequence[str]) -> dict[str, np.ndarray]:
    """What sentence-transformers' tokenizer hands the graph: our ids and mask, token types all 0 (one segment)."""
    out = {n: feats[n].numpy() for n in names if n in feats}
    if "token_type_ids" in names:
        out["token_type_ids"] = np.zeros_like(out["input_ids"])
    return out


def export_token_embeddings(encoder: Encoder, path: Path, opset: int = 18) -> list[str]:
    """Write the backbone graph to ``path`` with batch and sequence dynamic; returns the input names."""
    names = backbone_inputs(encoder)
    feats = encoder.tokenize(["an example text for export", "short"], "passage")  # unequal lengths: both axes vary
    arrays = st_features(feats, names)
    args = tuple(torch.from_numpy(arrays[n]) for n in names)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        program = torch.onnx.export(TokenEmbeddings(encoder.backbone).eval(), args, dynamo=True,
                                    input_names=names, output_names=[HIDDEN_OUTPUT], opset_version=opset,
                                    dynamic_shapes={n: {0: batch, 1: sequence} for n in names},
                                    optimize=True, verbose=False)
    program.save(str(path))
    return names


def write_module_files(encoder: Encoder, folder: Path) -> None:
    """config.json, tokenizer files, modules.json, sentence_bert_config.json, 1_Pooling/, 2_Normalize/, prompts
    (no weights)."""
    encoder.backbone.config.save_pretrained(folder)
    encoder.tokenizer.save_pretrained(folder)
    write_sentence_transformers_files(encoder, folder)


def pool_like_folder(folder: Path, hidden: np.ndarray, attention_mask: np.ndarray,
                     pool_mask: np.ndarray) -> np.ndarray:
    """Apply the folder's own ``1_Pooling/config.json`` (and ``2_Normalize`` if listed) to (B, T, D) states.

    ``pool_mask`` marks the tokens pooling may use when ``include_prompt`` is false (prompt tokens are 0).
    """
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    modules = json.loads((folder / "modules.json").read_text())
    mask = (attention_mask if config.get("include_prompt", True) else pool_mask).astype(np.float32)  # (B, T)
    if config.get("pooling_mode_mean_tokens"):
        pooled = (hidden * mask[..., None]).sum(1) / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
    elif config.get("pooling_mode_cls_token"):
        pooled = hidden[np.arange(len(hidden)), attention_mask.argmax(1)]  # first real token
    elif config.get("pooling_mode_lasttoken"):
        last = attention_mask.shape[1] - 1 - attention_mask[:, ::-1].argmax(1)  # last real token
        pooled = hidden[np.arange(len(hidden)), last]
    else:
        raise ValueError(f"{folder / '1_Pooling' / 'config.json'}: pooling mode: none of mean, cls, lasttoken is set")
    if any(m["type"].endswith("Normalize") for m in modules):
        pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return pooled.astype(np.float32)  # (B, D)


def layout_embeddings(folder: Path, session: Any, feats: dict[str, torch.Tensor]) -> np.ndarray:
    """What sentence-transformers computes from the folder: the token-embedding graph, then its pooling config."""
    names = [i.name for i in session.get_inputs()]
    hidden = session.run([HIDDEN_OUTPUT], st_features(feats, names))[0]  # (B, T, D)
    return pool_like_folder(folder, hidden, feats["attention_mask"].numpy(), feats["pool_mask"].numpy())


@torch.no_grad()
def verify_layout(encoder: Encoder, folder: Path, session: Any, texts: Sequence[str], tolerance: float,
                  int8_session: Any = None, batch_sizes: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """``onnx/model.onnx`` plus the folder's pooling config against ``Encoder.forward`` on the same tokens (and
    the int8 file against the fp32 one, reported, not bounded).

    Raises ParityError when the fp32 max abs diff reaches ``tolerance``.
    """
    worst, worst_int8, checked = 0.0, 0.0, 0
    for batch_size in batch_sizes:
        for side in ("query", "passage"):
            feats = encoder.tokenize(list(texts[:batch_size]), side)
            got = layout_embeddings(folder, session, feats)  # (B, D)
            worst = max(worst, float(np.abs(got - encoder(**feats).numpy()).max()))
            if int8_session is not None:
                worst_int8 = max(worst_int8, float(np.abs(layout_embeddings(folder, int8_session, feats) - got).max()))
            checked += 1
    print(f"sentence-transformers layout ({ST_DIR}/{ST_MODEL} + 1_Pooling): max abs diff {worst:.2e} "
          f"over {checked} batches, tolerance {tolerance:g}")
    if not worst < tolerance:  # also catches NaN
        raise ParityError(f"{ST_DIR}/{ST_MODEL} + pooling config differs from PyTorch by {worst:.2e} >= "
                          f"{tolerance:g} (verify.tolerance)")
    report = {"max_abs_diff": worst, "tolerance": tolerance, "batches": checked}
    if int8_session is not None:
        report["int8_max_abs_diff_vs_fp32"] = worst_int8
    return report

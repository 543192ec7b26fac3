"""The graphs of an export folder: our pooled graph, its int8 copy, and the sentence-transformers layout.

    python -m trainer.export checkpoint=runs/demo/checkpoints/step-000090

Files written into the folder (each graph fused for ONNX Runtime when ``optimize=true``):
    model.onnx                          text -> pooled, normalised embedding; checked against PyTorch
    model_int8.onnx                     the same with int8 weights (quantize=true)
    sentence-transformers/              for SentenceTransformer(<out>/sentence-transformers, backend="onnx"):
        onnx/model.onnx                 backbone -> last_hidden_state; checked against PyTorch with the folder's
                                        own pooling config
        onnx/model_qint8_avx512_vnni.onnx   its int8 copy (quantize=true)
        config.json, tokenizer files, modules.json, sentence_bert_config.json, 1_Pooling/, 2_Normalize/, prompts
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig

from trainer.exporting.onnx_model import OnnxEncoder, export_onnx, session, verify
from trainer.exporting.ort_optimize import count_ops, fuse_for_ort, quantize_int8
from trainer.exporting.st_layout import (ST_DIR, ST_FOLDER, ST_INT8, ST_MODEL, export_token_embeddings,
                                         verify_layout, write_module_files)
from trainer.models.encoder import Encoder

MODEL, MODEL_INT8 = "model.onnx", "model_int8.onnx"


def onnx_encoder(cfg: DictConfig, path: Path, encoder: Encoder) -> OnnxEncoder:
    """An ``OnnxEncoder`` with the configured session (threads, spinning)."""
    return OnnxEncoder(path, encoder, cfg.session.threads or None, cfg.session.spinning)


def export_graph_pair(cfg: DictConfig, export: Callable[[Path], list[str]], fp32: Path, int8: Path,
                      scratch: Path) -> dict[str, Any]:
    """Export once into ``scratch`` (a folder), then write the fp32 graph (packed attention) and, if asked, the
    int8 graph; returns the input names, fusion counts and op counts."""
    scratch.mkdir(parents=True, exist_ok=True)
    plain = scratch / "plain.onnx"
    info: dict[str, Any] = {"inputs": export(plain)}
    if cfg.optimize:
        info["fusions"] = fuse_for_ort(plain, fp32, packed_qkv=True)
    else:
        shutil.copy2(plain, fp32)
    info["ops"] = count_ops(fp32)
    if cfg.quantize:
        source = plain
        if cfg.optimize:  # q/k/v as three MatMuls so that quantisation reaches them too
            source = scratch / "unpacked.onnx"
            fuse_for_ort(plain, source, packed_qkv=False)
        quantize_int8(source, int8, per_channel=cfg.int8.per_channel, reduce_range=cfg.int8.reduce_range)
        info["int8_ops"] = count_ops(int8)
    return info


def write_graphs(cfg: DictConfig, encoder: Encoder, folder: Path, texts: Sequence[str]) -> dict[str, Any]:
    """Write every graph into ``folder`` and check the fp32 ones against PyTorch; returns the report part."""
    report: dict[str, Any] = {"optimize": bool(cfg.optimize), "int8_settings": dict(cfg.int8) if cfg.quantize else None}
    with tempfile.TemporaryDirectory(prefix=".plain-", dir=folder) as tmp:
        scratch = Path(tmp)
        pooled = export_graph_pair(cfg, lambda p: export_onnx(encoder, p, cfg.opset), folder / MODEL,
                                   folder / MODEL_INT8, scratch / "pooled")
        report["inputs"] = pooled.pop("inputs")
        report["graph"] = pooled
        report["verify"] = verify(encoder, onnx_encoder(cfg, folder / MODEL, encoder), texts,
                                  list(cfg.verify.batch_sizes), cfg.verify.tolerance, cfg.verify.seed)
        if cfg.sentence_transformers:
            st_folder = folder / ST_FOLDER
            (st_folder / ST_DIR).mkdir(parents=True)
            report["sentence_transformers"] = export_graph_pair(
                cfg, lambda p: export_token_embeddings(encoder, p, cfg.opset), st_folder / ST_DIR / ST_MODEL,
                st_folder / ST_DIR / ST_INT8, scratch / "token_embeddings")
            report["sentence_transformers"]["folder"] = ST_FOLDER
            write_module_files(encoder, st_folder)
            threads, spinning = cfg.session.threads or None, cfg.session.spinning
            int8 = session(st_folder / ST_DIR / ST_INT8, threads, spinning) if cfg.quantize else None
            report["sentence_transformers"]["verify"] = verify_layout(
                encoder, st_folder, session(st_folder / ST_DIR / ST_MODEL, threads, spinning), texts,
                cfg.verify.tolerance, int8)
    return report

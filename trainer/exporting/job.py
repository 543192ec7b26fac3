"""The export job: checkpoint -> ONNX (+ int8) folder, verified against PyTorch, with a model card.

    python -m trainer.export checkpoint=runs/demo/checkpoints/step-000090 out=runs/demo/onnx

Output folder (written to a temporary sibling, then renamed; an earlier export there is replaced, any other existing
folder only with ``overwrite=true``, and never a folder that holds the checkpoint):
    model.onnx, model_int8.onnx (quantize=true), onnx/ with the sentence-transformers module files
    (sentence_transformers=true; see graphs.py), tokenizer files, embedstill.json, export.json (report), README.md
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from trainer.evaluation.retrieval import load_beir
from trainer.evaluation.kinds import encoder_embed, load_task, main_metric, main_score_name, score_task
from trainer.exporting.card import model_card
from trainer.exporting.graphs import MODEL, MODEL_INT8, onnx_encoder, write_graphs
from trainer.exporting.onnx_model import OnnxEncoder
from trainer.io import atomic_dir
from trainer.models.checkpoint import read_metadata
from trainer.models.encoder import METADATA_FILE, Encoder

REQUIRED_ENCODER_KEYS = ("pooling", "normalize", "max_length_query", "max_length_passage", "prompts")
FALLBACK_TEXTS = ["A short query.", "Health officials report a rise in flu cases across the region this winter.",
                  "Markets fell sharply on Monday after the central bank raised interest rates again."]


def checked_metadata(checkpoint: Path) -> dict[str, Any]:
    """Our metadata, or an error that names what is missing."""
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint={checkpoint}: no such folder")
    metadata = read_metadata(checkpoint)
    missing = [k for k in REQUIRED_ENCODER_KEYS if k not in metadata.get("encoder", {})]
    if missing:
        raise ValueError(f"{checkpoint / METADATA_FILE}: encoder: missing {', '.join(missing)} "
                         "(needed to put pooling, normalisation and prompts into the graph)")
    return metadata


def is_export(folder: Path) -> bool:
    """A folder this job wrote: its report and its graph are there."""
    return (folder / "export.json").is_file() and (folder / "model.onnx").is_file()


def check_out(out: Path, checkpoint: Path, overwrite: bool) -> None:
    """Refuse an ``out`` whose replacement loses something: the checkpoint (always), or a folder that is not an
    earlier export (unless ``overwrite``). Runs before any work."""
    target, source = out.resolve(), checkpoint.resolve()
    if target == source or target in source.parents:
        raise ValueError(f"out={out}: the folder holds the checkpoint {checkpoint}, which replacing it would delete; "
                         f"give out a folder of its own (the default is {checkpoint}-onnx)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={out}: is a file, not a folder: give out a folder")
    if not out.exists() or is_export(out) or not any(out.iterdir()) or overwrite:
        return
    names = sorted(p.name for p in out.iterdir())
    raise ValueError(f"out={out}: exists and is not an earlier export (it holds {', '.join(names[:5])}"
                     f"{', ...' if len(names) > 5 else ''}), and the export replaces its out folder: give another out, "
                     "or overwrite=true to replace it")


def int8_quality(cfg: DictConfig, encoder: Encoder, fp32: OnnxEncoder, int8: OnnxEncoder) -> dict[str, Any]:
    """Main score of each held-out task with PyTorch, ONNX fp32 and ONNX int8."""
    quality: dict[str, Any] = {}
    for task in cfg.eval.tasks:
        data, main = load_task(task), main_score_name(task)
        scores = {name: score_task(task, data, encoder_embed(model, task, cfg.eval.batch_size))[main]
                  for name, model in (("torch", encoder), ("onnx_fp32", fp32), ("onnx_int8", int8))}
        scores["int8_change"] = scores["onnx_int8"] - scores["onnx_fp32"]
        quality[main_metric(task)] = scores
        print(f"{main_metric(task)}: torch {scores['torch']:.4f} onnx fp32 {scores['onnx_fp32']:.4f} "
              f"int8 {scores['onnx_int8']:.4f} (int8 change {scores['int8_change']:+.4f}, {task_size(data)})")
    return quality


def task_size(data: Any) -> str:
    """``N queries, M documents`` for retrieval, ``N rows`` for other kinds (for the log line)."""
    if hasattr(data, "corpus"):
        return f"{len(data.queries)} queries, {len(data.corpus)} documents"
    rows = getattr(data, "sentences1", None) or getattr(data, "texts", None) or getattr(data, "queries", [])
    return f"{len(rows)} rows"


def seed_texts(cfg: DictConfig) -> list[str]:
    """Real texts from the first retrieval task for the verification inputs, else a fixed few."""
    for task in (t for t in cfg.eval.tasks if t.kind == "retrieval"):
        data = load_beir(task.path, task.split, 20)
        return data.queries[:20] + data.corpus[:20]
    return FALLBACK_TEXTS


def run_export(cfg: DictConfig) -> dict[str, Any]:
    """Export, verify, optionally quantise and score, write the card; returns the report."""
    checkpoint = Path(cfg.checkpoint)
    metadata = checked_metadata(checkpoint)
    check_out(Path(cfg.out), checkpoint, cfg.overwrite)
    encoder = Encoder.from_pretrained(str(checkpoint)).eval()
    texts = seed_texts(cfg)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "opset": cfg.opset}

    def write(tmp: Path) -> None:
        started = time.perf_counter()
        report.update(write_graphs(cfg, encoder, tmp, texts))
        report["export_seconds"] = time.perf_counter() - started
        if cfg.quantize:
            fp32, int8 = onnx_encoder(cfg, tmp / MODEL, encoder), onnx_encoder(cfg, tmp / MODEL_INT8, encoder)
            report["int8"] = {"max_abs_diff_vs_fp32": float(abs(int8.encode(texts) - fp32.encode(texts)).max())}
            report["quality"] = int8_quality(cfg, encoder, fp32, int8)
        encoder.tokenizer.save_pretrained(tmp)
        shutil.copy2(checkpoint / METADATA_FILE, tmp / METADATA_FILE)
        (tmp / "export.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(checkpoint, metadata, report))

    out = atomic_dir(Path(cfg.out), write)
    print(f"exported {checkpoint} -> {out}")
    return report

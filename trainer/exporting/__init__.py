"""Deployment export: ONNX with pooling and normalisation in the graph, ORT fusions, int8, model card.

    python -m trainer.export checkpoint=runs/demo/checkpoints/step-000090
"""
from trainer.exporting.onnx_model import OnnxEncoder, export_onnx, verify
from trainer.exporting.ort_optimize import fuse_for_ort, quantize_int8, session_options

__all__ = ["OnnxEncoder", "export_onnx", "fuse_for_ort", "quantize_int8", "session_options", "verify"]

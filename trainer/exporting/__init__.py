"""Deployment export: ONNX with pooling and normalisation in the graph, int8 quantisation, model card.

    python -m trainer.export checkpoint=runs/demo/checkpoints/step-000090
"""
from trainer.exporting.onnx_model import OnnxEncoder, export_onnx, quantize_int8, verify

__all__ = ["OnnxEncoder", "export_onnx", "quantize_int8", "verify"]

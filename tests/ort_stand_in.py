"""ONNX Runtime in the place of optimum's ``ORTModelForFeatureExtraction``, so that sentence-transformers' own ONNX
backend code (which file it picks, its tokenizer, prompts, pooling and normalisation modules) runs on an export folder
where optimum cannot be installed (its releases up to 0.1.0 require transformers < 4.58).

The stand-in only does what optimum does for a folder that already holds its graph: open
``<folder>/<subfolder>/<file_name>`` in ONNX Runtime and return ``last_hidden_state``.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch


class OrtFeatureExtraction(torch.nn.Module):
    """What sentence-transformers calls on optimum's model: ``forward(**features)["last_hidden_state"]``."""

    loaded: list[Path] = []

    def __init__(self, path: Path, config: Any) -> None:
        super().__init__()
        import onnxruntime as ort

        self.config = config
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    @classmethod
    def from_pretrained(cls, model_id: str, config: Any = None, export: bool = False, file_name: str = "model.onnx",
                        subfolder: str = "", provider: Optional[str] = None, **_: Any) -> "OrtFeatureExtraction":
        if export:  # optimum would export the PyTorch weights: the folder's own graph was not found
            raise FileNotFoundError(f"{model_id}: sentence-transformers found no ONNX file to load ({file_name})")
        path = Path(model_id, subfolder or "", file_name)
        cls.loaded.append(path)
        return cls(path, config)

    def _save_pretrained(self, save_directory: Any, **_: Any) -> None:  # wrapped by sentence-transformers
        raise NotImplementedError("the stand-in only loads")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
        missing = [n for n in self.names if n not in feeds and n != "token_type_ids"]
        if missing:
            raise ValueError(f"graph wants inputs {missing} that sentence-transformers does not give")
        arrays = {n: (feeds[n] if n in feeds else torch.zeros_like(input_ids)).numpy().astype(np.int64)
                  for n in self.names}
        hidden = self.session.run(["last_hidden_state"], arrays)[0]  # (B, T, D)
        return {"last_hidden_state": torch.from_numpy(hidden)}


def install(monkeypatch: Any) -> type:
    """Put the stand-in where ``from optimum.onnxruntime import ...`` finds it (undone by ``monkeypatch``);
    returns the class, whose ``loaded`` lists the files opened."""
    optimum, ort_mod = types.ModuleType("optimum"), types.ModuleType("optimum.onnxruntime")
    ort_mod.ONNX_WEIGHTS_NAME = "model.onnx"
    for name in ("ORTModelForFeatureExtraction", "ORTModelForCausalLM", "ORTModelForMaskedLM",
                 "ORTModelForSequenceClassification"):
        setattr(ort_mod, name, OrtFeatureExtraction)
    optimum.onnxruntime = ort_mod
    monkeypatch.setitem(sys.modules, "optimum", optimum)
    monkeypatch.setitem(sys.modules, "optimum.onnxruntime", ort_mod)
    OrtFeatureExtraction.loaded = []
    return OrtFeatureExtraction

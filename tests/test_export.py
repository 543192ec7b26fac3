"""Export: ONNX graph with pooling + normalisation equals Encoder.forward; int8 quality; model card; bad input.

    pytest -q tests/test_export.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import ROOT, make_rows, write_beir


def _compose_export(*overrides: str) -> Any:
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="export", overrides=list(overrides))


@pytest.fixture(scope="module")
def run_checkpoint(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint inside a run dir (config.yaml, eval.jsonl), with a query prefix left out of pooling."""
    from trainer.models import Encoder
    from trainer.models.checkpoint import save_checkpoint
    from trainer.models.encoder import EncoderSpec
    from trainer.models.prompts import PromptSpec

    run = tmp_path_factory.mktemp("run")
    spec = EncoderSpec(max_length_query=16, max_length_passage=32, exclude_prompt_from_pooling=True,
                       prompts=PromptSpec(query_prefix="query : ", passage_prefix="passage : "))
    encoder = Encoder.from_pretrained(str(tiny_model), spec)
    (run / "config.yaml").write_text("model:\n  pooling: mean\ndata:\n  train_files: [tiny-train.jsonl]\n"
                                     "  num_negatives: 3\noptim:\n  lr: 0.0003\n")
    (run / "eval.jsonl").write_text('{"step": 0, "tiny/ndcg_at_10": 0.25}\n{"step": 6, "tiny/ndcg_at_10": 0.5}\n')
    return save_checkpoint(encoder, run / "checkpoints" / "step-000006", {"step": 6, "run": str(run)})


def test_export_matches_pytorch_and_writes_card(run_checkpoint: Path, tmp_path: Path) -> None:
    import onnx

    from trainer.exporting.job import run_export
    from trainer.exporting.onnx_model import OnnxEncoder
    from trainer.models import Encoder

    beir = write_beir(tmp_path / "beir", make_rows(16, seed=5))
    cfg = _compose_export(f"checkpoint={run_checkpoint}", f"out={tmp_path / 'onnx'}",
                          f"eval.tasks=[{{name: tiny, path: '{beir}', kind: retrieval}}]", "verify.batch_sizes=[1,3]")
    report = run_export(cfg)
    out = tmp_path / "onnx"
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.onnx", "model_int8.onnx"]
    assert report["inputs"] == ["input_ids", "attention_mask", "pool_mask"]
    assert report["verify"]["max_abs_diff"] < 1e-4 and len(report["verify"]["checked"]) == 4

    graph = onnx.load(str(out / "model.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert all(isinstance(d, str) for shape in dims.values() for d in shape), dims  # batch and sequence dynamic

    # Independently of verify(): a fresh batch of 6 through Encoder.encode vs the exported folder alone.
    texts = ["w1", "w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20", "news of the word",
             "a", "w5 w5 w5", "the query"]
    encoder = Encoder.from_pretrained(str(run_checkpoint))
    onnx_encoder = OnnxEncoder(out / "model.onnx", encoder)
    for side in ("query", "passage"):
        got, expected = onnx_encoder.encode(texts, side=side), encoder.encode(texts, side=side)
        assert np.abs(got - expected).max() < 1e-4
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalised inside the graph

    quality = report["quality"]["tiny/ndcg_at_10"]
    assert abs(quality["torch"] - quality["onnx_fp32"]) < 1e-3
    assert quality["int8_change"] == pytest.approx(quality["onnx_int8"] - quality["onnx_fp32"])
    assert 0 < report["int8"]["max_abs_diff_vs_fp32"] < 0.5  # int8 is lossy, but close

    card = (out / "README.md").read_text()
    assert "'query : '" in card and "excluded from pooling: True" in card
    assert "| tiny/ndcg_at_10 | 0.2500 | 0.5000 |" in card  # scores from the run's eval.jsonl
    assert "tiny-train.jsonl (3 hard negatives" in card and "lr: 0.0003" in card
    assert json.loads((out / "embedstill.json").read_text())["step"] == 6
    assert (out / "tokenizer.json").exists()


def test_export_without_metadata_says_what_is_missing(tiny_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "trainer.export", f"checkpoint={tiny_model}", "eval=none",
                           f"out={tmp_path / 'x'}"], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert proc.returncode != 0
    assert "no embedstill.json" in proc.stderr and "pooling, normalisation" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_export_metadata_without_encoder_keys(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from trainer.exporting.job import checked_metadata

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_model, ckpt)
    (ckpt / "embedstill.json").write_text(json.dumps({"encoder": {"pooling": "mean", "normalize": True}}))
    with pytest.raises(ValueError, match=r"embedstill.json: encoder: missing max_length_query, max_length_passage, "
                                         r"prompts"):
        checked_metadata(ckpt)


def test_export_never_replaces_what_is_not_an_earlier_export(run_checkpoint: Path, tmp_path: Path) -> None:
    from trainer.exporting.job import run_export

    run = run_checkpoint.parent.parent
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    quick = ["eval=none", "quantize=false", "verify.batch_sizes=[1]"]
    for out, extra in [(run, []), (run, ["overwrite=true"]), (run_checkpoint, ["overwrite=true"]),
                       (run / "checkpoints", [])]:
        with pytest.raises(ValueError, match=rf"out={out}: .*holds the checkpoint"):
            run_export(_compose_export(f"checkpoint={run_checkpoint}", f"out={out}", *extra, *quick))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"out={other}: exists and is not an earlier export.*overwrite=true"):
        run_export(_compose_export(f"checkpoint={run_checkpoint}", f"out={other}", *quick))
    assert (other / "keep.txt").read_text() == "mine"
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # the run dir is untouched
    from trainer.exporting.job import check_out

    check_out(other, run_checkpoint, overwrite=True)  # asked for explicitly: allowed
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for name in ("export.json", "model.onnx", "model_int8.onnx"):
        (earlier / name).write_text("{}")
    run_export(_compose_export(f"checkpoint={run_checkpoint}", f"out={earlier}", *quick))  # replaced, not refused
    assert json.loads((earlier / "export.json").read_text())["checkpoint"] == str(run_checkpoint)
    assert not (earlier / "model_int8.onnx").exists()  # the earlier export's files went with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "notes"]  # no temporary or old folder left

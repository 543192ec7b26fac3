"""Export: ONNX graph with pooling + normalisation equals Encoder.forward; ORT fusions (BERT and MPNet); int8;
the sentence-transformers layout; model card; bad input.

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


@pytest.fixture(scope="module")
def exported(run_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One export of ``run_checkpoint`` (int8 scored on a tiny BEIR task): the folder and the report."""
    from trainer.exporting.job import run_export

    tmp = tmp_path_factory.mktemp("export")
    beir = write_beir(tmp / "beir", make_rows(16, seed=5))
    cfg = _compose_export(f"checkpoint={run_checkpoint}", f"out={tmp / 'onnx'}",
                          f"eval.tasks=[{{name: tiny, path: '{beir}', kind: retrieval}}]", "verify.batch_sizes=[1,3]")
    return tmp / "onnx", run_export(cfg)


def test_export_matches_pytorch_and_writes_card(run_checkpoint: Path, exported: tuple[Path, dict[str, Any]]) -> None:
    import onnx

    from trainer.exporting.onnx_model import OnnxEncoder
    from trainer.models import Encoder

    out, report = exported
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.onnx")) == [
        "model.onnx", "model_int8.onnx", "sentence-transformers/onnx/model.onnx",
        "sentence-transformers/onnx/model_qint8_avx512_vnni.onnx"]
    assert report["inputs"] == ["input_ids", "attention_mask", "pool_mask"]
    assert report["verify"]["max_abs_diff"] < 1e-4 and len(report["verify"]["checked"]) == 4
    # Fused for ONNX Runtime (2 layers): one Attention and two SkipLayerNormalizations per layer, no loose MatMul
    # left in the int8 graph (q/k/v, output and both FFN projections are int8).
    assert report["graph"]["ops"]["Attention"] == 2 and report["graph"]["ops"]["SkipLayerNormalization"] == 4
    assert report["graph"]["ops"]["BiasGelu"] == 2
    assert report["graph"]["int8_ops"]["MatMulInteger"] == 12 and report["graph"]["int8_ops"]["MatMul"] == 0
    assert report["sentence_transformers"]["verify"]["max_abs_diff"] < 1e-4
    assert 0 < report["sentence_transformers"]["verify"]["int8_max_abs_diff_vs_fp32"] < 0.5  # runs, lossy, close

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
    assert '<this folder>/sentence-transformers", backend="onnx"' in card
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


def _tiny_mpnet(folder: Path) -> Path:
    """A random 2-layer MPNet (relative position bias in attention) with the tiny BERT's tokenizer."""
    import torch
    from transformers import MPNetConfig, MPNetModel

    from conftest import build_tiny_model

    build_tiny_model(folder)
    (folder / "config.json").unlink()
    (folder / "model.safetensors").unlink()
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=220, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=130, pad_token_id=0)
    MPNetModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("arch", ["bert", "mpnet"])
def test_fusion_produces_ort_attention_and_keeps_outputs(arch: str, tiny_model: Path, tmp_path: Path,
                                                         one_thread: Any) -> None:
    """The dynamo graph fused into ORT's Attention / SkipLayerNormalization / BiasGelu, outputs within 1e-4."""
    import onnxruntime as ort
    import torch

    from trainer.exporting.onnx_model import export_onnx
    from trainer.exporting.ort_optimize import count_ops, fuse_for_ort
    from trainer.models import Encoder
    from trainer.models.encoder import EncoderSpec

    folder = tiny_model if arch == "bert" else _tiny_mpnet(tmp_path / "mpnet")
    encoder = Encoder.from_pretrained(str(folder), EncoderSpec(max_length_query=16, max_length_passage=24)).eval()
    export_onnx(encoder, tmp_path / "plain.onnx")
    counts = fuse_for_ort(tmp_path / "plain.onnx", tmp_path / "fused.onnx", packed_qkv=True)
    fuse_for_ort(tmp_path / "plain.onnx", tmp_path / "unpacked.onnx", packed_qkv=False)
    assert count_ops(tmp_path / "plain.onnx")["Attention"] == 0
    ops = count_ops(tmp_path / "fused.onnx")
    embedding_adds = 1 if arch == "mpnet" else 0  # MPNet's word + position embedding Add joins its LayerNorm too
    assert ops["Attention"] == 2 and ops["BiasGelu"] == 2, (counts, ops)
    assert ops["SkipLayerNormalization"] == 4 + embedding_adds, (counts, ops)
    unpacked = count_ops(tmp_path / "unpacked.onnx")
    assert unpacked["MultiHeadAttention"] == 2 and unpacked["Attention"] == 0 and unpacked["MatMul"] == 12
    if arch == "mpnet":
        assert counts["score_bias_merge"] == 2  # position bias + mask merged, else no attention pattern matches

    texts = ["w1 w2 w3", "a", " ".join(f"w{i}" for i in range(40)), "news of the word"]  # one row truncated
    feats = encoder.tokenize(texts, "passage")
    with torch.no_grad():
        expected = encoder(**feats).numpy()  # (4, 32)
    for name in ("fused.onnx", "unpacked.onnx"):
        sess = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        got = sess.run(None, {i.name: feats[i.name].numpy() for i in sess.get_inputs()})[0]
        assert np.abs(got - expected).max() < 1e-4, name


def test_sentence_transformers_layout_matches_pytorch(run_checkpoint: Path,
                                                      exported: tuple[Path, dict[str, Any]]) -> None:
    """onnx/model.onnx + the folder's own pooling config == Encoder.encode, prompts excluded from pooling."""
    import onnxruntime as ort

    from trainer.exporting.st_layout import ST_FOLDER, pool_like_folder, st_features
    from trainer.models import Encoder

    out = exported[0] / ST_FOLDER
    for name in ("modules.json", "config.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                 "1_Pooling/config.json", "tokenizer.json"):
        assert (out / name).exists(), name
    assert not (out / "model.safetensors").exists()  # the ONNX folder carries no PyTorch weights
    assert json.loads((out / "1_Pooling/config.json").read_text())["include_prompt"] is False

    sess = ort.InferenceSession(str(out / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in sess.get_outputs()] == ["last_hidden_state"]
    encoder = Encoder.from_pretrained(str(run_checkpoint))
    texts = ["w1 w2", "a", " ".join(f"w{i}" for i in range(50)), "news of the word w7"]
    for side in ("query", "passage"):  # query side has a prefix excluded from pooling
        feats = encoder.tokenize(texts, side)
        hidden = sess.run(["last_hidden_state"], st_features(feats, ["input_ids", "attention_mask",
                                                                       "token_type_ids"]))[0]  # (4, T, 32)
        got = pool_like_folder(out, hidden, feats["attention_mask"].numpy(), feats["pool_mask"].numpy())
        np.testing.assert_allclose(got, encoder.encode(texts, side=side), atol=1e-4)


def test_sentence_transformers_loads_onnx_backend(run_checkpoint: Path,
                                                  exported: tuple[Path, dict[str, Any]]) -> None:
    """SentenceTransformer(out/sentence-transformers, backend="onnx") gives Encoder.encode's embeddings (with
    optimum's ORT backend, when it is importable)."""
    pytest.importorskip("optimum.onnxruntime", reason="sentence-transformers' ONNX backend needs optimum-onnx, "
                                                      "whose releases (<= 0.1.0) require transformers<4.58")
    from sentence_transformers import SentenceTransformer

    from trainer.exporting.st_layout import ST_FOLDER
    from trainer.models import Encoder

    texts = ["w1 w2", "a", "news of the word w7"]
    encoder = Encoder.from_pretrained(str(run_checkpoint))
    for file_name, tolerance in (("model.onnx", 1e-4), ("model_qint8_avx512_vnni.onnx", 0.1)):
        model = SentenceTransformer(str(exported[0] / ST_FOLDER), backend="onnx",
                                    model_kwargs={"file_name": file_name})
        got = model.encode(texts, prompt_name="passage")
        np.testing.assert_allclose(got, encoder.encode(texts, side="passage"), atol=tolerance)


def test_sentence_transformers_onnx_backend_runs_the_layout(run_checkpoint: Path,
                                                            exported: tuple[Path, dict[str, Any]],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """sentence-transformers' own ONNX loading (file choice, tokenizer, prompts, pooling without the prompt,
    normalisation) on the folder, with ONNX Runtime standing in for optimum: Encoder.encode's embeddings."""
    from ort_stand_in import install
    from sentence_transformers import SentenceTransformer

    from trainer.exporting.st_layout import ST_FOLDER
    from trainer.models import Encoder

    stand_in = install(monkeypatch)
    folder = exported[0] / ST_FOLDER
    encoder = Encoder.from_pretrained(str(run_checkpoint))
    texts = ["w1 w2", "a", " ".join(f"w{i}" for i in range(50)), "news of the word w7"]  # one row truncated
    for file_name, tolerance in (("model.onnx", 1e-4), ("model_qint8_avx512_vnni.onnx", 0.1)):
        kwargs = {} if file_name == "model.onnx" else {"model_kwargs": {"file_name": file_name}}  # default first
        model = SentenceTransformer(str(folder), backend="onnx", device="cpu", **kwargs)
        assert stand_in.loaded[-1] == folder / "onnx" / file_name
        # encode_query / encode_document: each side's prompt (left out of pooling) and max length
        for side, encode in (("query", model.encode_query), ("passage", model.encode_document)):
            np.testing.assert_allclose(encode(texts), encoder.encode(texts, side=side), atol=tolerance)


def test_optimize_false_keeps_a_plain_onnx_graph(tiny_model: Path, tmp_path: Path, one_thread: Any) -> None:
    """optimize=false: standard ONNX ops only (other runtimes), int8 still quantises every weight MatMul."""
    import onnx
    from omegaconf import OmegaConf

    from trainer.exporting.graphs import export_graph_pair
    from trainer.exporting.onnx_model import export_onnx
    from trainer.models import Encoder
    from trainer.models.encoder import EncoderSpec

    encoder = Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_query=16, max_length_passage=24))
    cfg = OmegaConf.create({"optimize": False, "quantize": True,
                            "int8": {"per_channel": True, "reduce_range": False}})
    info = export_graph_pair(cfg, lambda p: export_onnx(encoder, p), tmp_path / "m.onnx", tmp_path / "q.onnx",
                             tmp_path / "scratch")
    assert "fusions" not in info
    assert info["ops"]["Attention"] == info["ops"]["SkipLayerNormalization"] == info["ops"]["BiasGelu"] == 0
    assert info["int8_ops"]["MatMulInteger"] == 12  # 6 weight MatMuls per layer; q.k and attention.v stay float
    domains = {n.domain for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert domains <= {"", "ai.onnx"}, domains  # no com.microsoft contrib ops


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


def test_parity_check_fails_the_export_on_a_different_graph(run_checkpoint: Path, exported: tuple[Path, dict[str, Any]],
                                                            tmp_path: Path) -> None:
    """The graphs checked against a model with other weights: a ParityError (a raise, not an assert that
    ``python -O`` would drop), for the pooled graph and for the sentence-transformers layout."""
    import onnxruntime as ort

    from conftest import build_tiny_model
    from trainer.exporting.onnx_model import OnnxEncoder, ParityError, verify
    from trainer.exporting.st_layout import ST_FOLDER, verify_layout
    from trainer.models import Encoder

    spec = Encoder.from_pretrained(str(run_checkpoint)).spec
    other = Encoder.from_pretrained(str(build_tiny_model(tmp_path / "other", seed=1)), spec).eval()
    out, texts = exported[0], ["w1 w2 w3", "news of the word", "a"]
    with pytest.raises(ParityError, match=r"differs from PyTorch by .* >= 0.0001 \(verify.tolerance\)"):
        verify(other, OnnxEncoder(out / "model.onnx", other), texts, [1, 2], 1e-4)
    folder = out / ST_FOLDER
    sess = ort.InferenceSession(str(folder / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(ParityError, match=r"onnx/model.onnx \+ pooling config differs from PyTorch"):
        verify_layout(other, folder, sess, texts, 1e-4)


def test_the_export_benchmark_counts_only_other_work_as_a_busy_machine() -> None:
    """Its own threads raise the load average it reads afterwards: a quiet 2-core machine measured with 2 threads
    ends near 2.0, which is no sign of other work."""
    from conftest import load_bench

    bench = load_bench("export")
    assert not bench.machine_busy(0.68, 2.04, threads=2)
    assert bench.machine_busy(1.5, 2.0, threads=2)  # busy before it started
    assert bench.machine_busy(0.2, 3.4, threads=2)  # another job joined during the run

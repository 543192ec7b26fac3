"""Students aligned to their teacher: the ridge-fitted Dense head, its export as a sentence-transformers Dense
module, and a tiny aligned run through the real loop (output in the teacher's dimension).

    pytest -q tests/test_align.py
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.models.encoder import Encoder
from trainer.teachers.align import ridge_fit


def test_ridge_fit_matches_the_closed_form_and_recovers_an_exact_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    true = rng.normal(size=(6, 4))
    np.testing.assert_allclose(ridge_fit(x, x @ true, ridge=0.0), true, atol=1e-8)  # no noise, no penalty
    y = x @ true + 0.1 * rng.normal(size=(200, 4))
    lam = 0.5 * np.trace(x.T @ x) / 6
    expected = np.linalg.inv(x.T @ x + lam * np.eye(6)) @ x.T @ y  # written out by hand
    np.testing.assert_allclose(ridge_fit(x, y, ridge=0.5), expected, atol=1e-8)
    assert np.linalg.norm(ridge_fit(x, y, ridge=0.5)) < np.linalg.norm(ridge_fit(x, y, ridge=0.0))


def test_dense_head_saves_as_a_sentence_transformers_dense_module(tiny_model: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from trainer.models.checkpoint import save_checkpoint

    enc = Encoder.from_pretrained(str(tiny_model))
    torch.manual_seed(0)
    enc.add_dense(48, torch.randn(48, enc.hidden_dim) * 0.1)
    texts = ["w1 w2 w3", "w4 w5", "w6"]
    before = enc.encode(texts, side="passage")
    assert before.shape == (3, 48) and np.allclose(np.linalg.norm(before, axis=1), 1.0, atol=1e-5)
    folder = save_checkpoint(enc, tmp_path / "ckpt", {"step": 1})
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"] == 32
    reloaded = Encoder.from_pretrained(str(folder))
    assert reloaded.dim == 48 and json.loads((folder / "embedstill.json").read_text())["dim"] == 48
    np.testing.assert_allclose(reloaded.encode(texts, side="passage"), before, atol=1e-6)
    st = SentenceTransformer(str(folder), device="cpu")
    assert st.get_sentence_embedding_dimension() == 48
    np.testing.assert_allclose(st.encode(texts), before, atol=1e-5)


def test_a_dense_module_we_cannot_reproduce_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.models.checkpoint import save_checkpoint

    enc = Encoder.from_pretrained(str(tiny_model))
    enc.add_dense(8)
    folder = save_checkpoint(enc, tmp_path / "ckpt", {"step": 1})
    config = folder / "2_Dense" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()),
                                  "activation_function": "torch.nn.modules.activation.Tanh"}))
    with pytest.raises(ValueError, match=r"2_Dense/config.json: only a bias-free Dense module with an Identity"):
        Encoder.from_pretrained(str(folder))


def test_aligned_student_trains_in_the_teacher_space(compose, tmp_path: Path) -> None:
    """distill.align=true: ridge-fitted head, embedding distillation through a frozen identity, exported head."""
    from conftest import build_tiny_model, make_rows
    from trainer.loop import train
    from trainer.teachers import BiEncoderTeacher

    teacher_dir = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)
    cfg = compose("teacher=mpnet", f"teacher.name_or_path={teacher_dir}", "distill=kl_embedding", "distill.align=true",
                  "train.max_steps=16", "optim.lr=3e-3", "optim.warmup_ratio=0.0", "logger.every_n_steps=4",
                  "eval.before_training=false")
    train(cfg)
    run = Path(cfg.run_dir)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["embed_distill"] < 0.1  # the ridge-fitted head starts near the teacher (random: about 1)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    student = Encoder.from_pretrained(str(ckpt))
    assert student.dim == 48 and student.hidden_dim == 32  # the teacher's width, through the exported head
    held_out = [row["pos"][0] for row in make_rows(32, seed=5)]
    teacher = BiEncoderTeacher(str(teacher_dir), max_length_passage=32, precision="float32")
    cosine = (student.encode(held_out, side="passage") * teacher.embed(held_out, "passage")).sum(1)  # (32,)
    assert cosine.mean() > 0.8  # texts it never saw land next to the teacher's own vectors


def test_asymmetric_evaluation_matches_a_brute_force_reference(tiny_model: Path, tiny_data: dict[str, Path],
                                                               tmp_path: Path) -> None:
    """corpus_checkpoint=: queries by the student, documents by the teacher; nDCG@10 recomputed by hand."""
    import math

    from conftest import build_tiny_model
    from trainer.evaluation.retrieval import load_beir
    from trainer.evaluation.runner import evaluate_checkpoint
    from trainer.models.checkpoint import save_checkpoint

    teacher_dir = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)  # no embedstill.json
    student = Encoder.from_pretrained(str(tiny_model))
    torch.manual_seed(1)
    student.add_dense(48, torch.randn(48, 32) * 0.2)
    ckpt = save_checkpoint(student, tmp_path / "student", {"step": 3})
    task = {"name": "tiny", "kind": "retrieval", "path": str(tiny_data["beir"])}
    results = evaluate_checkpoint(ckpt, [task, {"name": "cls", "kind": "classification", "path": "unused.jsonl"}],
                                  tmp_path / "out", corpus_checkpoint=teacher_dir, log=lambda _: None)
    assert set(results) == {"tiny"}  # only retrieval has a query side and a document side
    data = load_beir(tiny_data["beir"])
    queries = Encoder.from_pretrained(str(ckpt)).encode(data.queries, side="query")  # (Q, 48)
    teacher = Encoder.from_pretrained(str(teacher_dir), Encoder.from_pretrained(str(ckpt)).spec)
    corpus = teacher.encode(data.corpus, side="passage")  # (N, 48)
    order = np.argsort(-(queries @ corpus.T), axis=1)  # (Q, N), best first
    ndcg = []
    for qi, qid in enumerate(data.query_ids):
        relevant = {data.corpus_ids.index(d) for d in data.qrels[qid]}
        ranked = list(order[qi, :10])
        ndcg.append(sum(1 / math.log2(r + 2) for r, d in enumerate(ranked) if d in relevant)
                    / sum(1 / math.log2(r + 2) for r in range(min(10, len(relevant)))))
    assert results["tiny"]["scores"]["test"][0]["ndcg_at_10"] == pytest.approx(float(np.mean(ndcg)), abs=1e-6)
    symmetric = evaluate_checkpoint(ckpt, [task], tmp_path / "sym", log=lambda _: None)
    assert symmetric["tiny"]["scores"]["test"][0]["ndcg_at_10"] != results["tiny"]["scores"]["test"][0]["ndcg_at_10"]


def test_asymmetric_evaluation_refuses_two_spaces(tiny_model: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from trainer.evaluation.runner import evaluate_checkpoint
    from trainer.models.checkpoint import save_checkpoint

    ckpt = save_checkpoint(Encoder.from_pretrained(str(tiny_model)), tmp_path / "student", {"step": 1})  # 32-d
    from conftest import build_tiny_model

    teacher_dir = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)
    with pytest.raises(ValueError, match="embeds into 48 dimensions, the checkpoint into 32"):
        evaluate_checkpoint(ckpt, [{"name": "tiny", "kind": "retrieval", "path": str(tiny_data["beir"])}],
                            tmp_path / "out", corpus_checkpoint=teacher_dir, log=lambda _: None)

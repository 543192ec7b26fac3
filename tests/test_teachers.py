"""Teachers behind one protocol: bi-encoder (cached embeddings), cross-encoder (cached pair scores),
precomputed scores from the data; batch targets from memory.

    pytest -q tests/test_teachers.py
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainer.data.dataset import Collator, ContrastiveDataset, text_id
from trainer.data.schema import Example
from trainer.teachers import BiEncoderTeacher, CrossEncoderTeacher, PrecomputedTeacher, Teacher
from trainer.teachers.targets import TeacherCollator, embedding_targets, pair_score_targets

EXAMPLES = [Example(query=f"w{i} w{i + 1} query", pos=[f"w{i} w{i + 1} passage w{i + 9}"],
                    neg=[f"w{i + 40} news", f"w{i + 50} word"], task="news" if i % 2 else None) for i in range(10)]


class CountCalls:
    """Counts how many texts/pairs reach a wrapped method."""

    def __init__(self, obj: Any, method: str) -> None:
        self.inner, self.count = getattr(obj, method), 0
        setattr(obj, method, self)

    def __call__(self, first: Any, *args: Any, **kwargs: Any) -> Any:
        self.count += len(first)
        return self.inner(first, *args, **kwargs)


def test_bi_encoder_teacher_cache_hit_miss_and_invalidation(tiny_model: Path, tmp_path: Path) -> None:
    teacher = BiEncoderTeacher(str(tiny_model), max_length_passage=32, cache_root=str(tmp_path), precision="float32")
    assert isinstance(teacher, Teacher) and teacher.dim == 32
    assert not teacher.encoder.training and not any(p.requires_grad for p in teacher.encoder.parameters())
    texts = [t for ex in EXAMPLES for t in ex.pos]
    plain = teacher.encoder.encode(texts, side="passage")
    counter = CountCalls(teacher.encoder, "encode")
    first = teacher.embed(texts, "passage")
    np.testing.assert_allclose(first, plain, atol=1e-6)
    assert counter.count == len(texts)  # miss: encoded once
    np.testing.assert_array_equal(teacher.embed(texts[::-1], "passage"), first[::-1])
    assert counter.count == len(texts)  # hit: no forward
    # A new prompt is a different teacher: its cache misses.
    prompted = BiEncoderTeacher(str(tiny_model), max_length_passage=32, passage_prefix="passage: ",
                                cache_root=str(tmp_path))
    prompted_counter = CountCalls(prompted.encoder, "encode")
    prompted.embed(texts, "passage")
    assert prompted_counter.count == len(texts)
    # Changed weights too.
    with torch.no_grad():
        next(teacher.encoder.backbone.parameters()).add_(0.01)
    teacher._fingerprint = None
    teacher.embed(texts, "passage")
    assert counter.count == 2 * len(texts)
    sims = teacher.score(texts[:3], texts[:3])
    np.testing.assert_allclose(sims, np.ones(3), atol=1e-5)  # normalised: a text against itself


def test_teacher_cache_follows_the_hardware_precision_rule_and_shows_progress(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import encoding

    texts = [f"w{i} w{i + 3} passage w{i % 7}" for i in range(300)]
    seen: list[Any] = []
    fast = BiEncoderTeacher(str(tiny_model), max_length_passage=32, cache_root=str(tmp_path))
    inner = fast.encoder.encode
    monkeypatch.setattr(fast.encoder, "encode", lambda *a, **k: seen.append(k["autocast_dtype"]) or inner(*a, **k))
    monkeypatch.setenv("EMBEDSTILL_PROGRESS", "1")
    fast.embed(texts, "passage")
    native = encoding.native_cpu_bf16()
    assert set(seen) == {torch.bfloat16 if native else None}  # the default: bf16 exactly where it is native
    err = capsys.readouterr().err
    assert "encode passages" in err and "300/300" in err, err[-300:]  # count, then rate and ETA beside it
    exact = BiEncoderTeacher(str(tiny_model), max_length_passage=32, cache_root=str(tmp_path), precision="float32")
    counter = CountCalls(exact.encoder, "encode")
    exact.embed(texts, "passage")
    # float32 and bf16 vectors never share a cache entry (on a CPU without native bf16 both are float32).
    assert counter.count == (len(texts) if native else 0)


def test_embedding_targets_annotate_batches_from_memory(tiny_model: Path, tmp_path: Path) -> None:
    teacher = BiEncoderTeacher(str(tiny_model), max_length_passage=32, cache_root=str(tmp_path))
    targets = embedding_targets(teacher, EXAMPLES)
    counter = CountCalls(teacher.encoder, "encode")
    dataset = ContrastiveDataset(EXAMPLES, num_negatives=2, seed=0)
    collate = TeacherCollator(Collator(teacher.encoder.tokenize), targets)
    batch = collate([dataset[i] for i in (3, 7, 1)])
    assert counter.count == 0  # training reads the teacher's embeddings from memory
    assert batch.teacher_query.shape == (3, 32) and batch.teacher_passage.shape == (9, 32)
    samples = [dataset[i] for i in (3, 7, 1)]
    expected_q = teacher.embed([s.query for s in samples], "query", [s.task for s in samples])
    expected_p = teacher.embed([p for s in samples for p in s.passages], "passage")
    np.testing.assert_allclose(batch.teacher_query.numpy(), expected_q, atol=1e-6)
    np.testing.assert_allclose(batch.teacher_passage.numpy(), expected_p, atol=1e-6)


def test_teacher_embeds_only_the_rows_of_distill_tasks(tiny_model: Path, tmp_path: Path) -> None:
    """distill.tasks=[news]: the teacher never embeds a text of another task (their batches skip it)."""
    from trainer.teachers.targets import teacher_rows

    teacher = BiEncoderTeacher(str(tiny_model), max_length_passage=32, cache_root=str(tmp_path))
    counter = CountCalls(teacher, "embed")
    rows = teacher_rows(["news"], EXAMPLES)
    targets = embedding_targets(teacher, EXAMPLES, rows)
    news = [ex for ex in EXAMPLES if ex.task == "news"]
    assert list(rows) == [1, 3, 5, 7, 9]
    assert counter.count == len(news) + 3 * len(news)  # each news query, positive and 2 negatives; nothing else
    assert set(targets.passage_ids) == {text_id(t) for ex in news for t in (*ex.pos, *ex.neg)}
    assert not targets.query_emb[0].any() and targets.query_emb[1].any()
    dataset = ContrastiveDataset(EXAMPLES, num_negatives=2, seed=0)
    batch = TeacherCollator(Collator(teacher.encoder.tokenize), targets, ["news"])([dataset[i] for i in (1, 5)])
    np.testing.assert_allclose(batch.teacher_query.numpy(), teacher.embed([EXAMPLES[1].query, EXAMPLES[5].query],
                                                                          "query", ["news", "news"]), atol=1e-6)
    skipped = TeacherCollator(Collator(teacher.encoder.tokenize), targets, ["news"])([dataset[i] for i in (0, 2)])
    assert skipped.teacher_skipped and skipped.teacher_query is None
    with pytest.raises(ValueError, match="names no task"):
        teacher_rows(["wordnet"], EXAMPLES)


def _tiny_cross_encoder(tiny_model: Path, folder: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(tiny_model, num_labels=1)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return folder


def test_cross_encoder_scores_pairs_and_caches(tiny_model: Path, tmp_path: Path) -> None:
    folder = _tiny_cross_encoder(tiny_model, tmp_path / "ce")
    teacher = CrossEncoderTeacher(str(folder), max_length=32, batch_size=3)
    assert isinstance(teacher, Teacher) and teacher.dim is None
    with pytest.raises(NotImplementedError):
        teacher.embed(["x"], "query")
    queries, passages = ["w1 w2", "w3", "w4 w5 w6 w7"], ["w1 news", "w9 w8 w7 w6 w5", "word"]
    scores = teacher.score(queries, passages)
    with torch.no_grad():
        for q, p, s in zip(queries, passages, scores):
            feats = teacher.tokenizer([q], [p], truncation=True, max_length=32, return_tensors="pt")
            assert abs(teacher.model(**feats).logits[0, 0].item() - s) < 1e-5  # padding-free reference
    counter = CountCalls(teacher, "score")
    targets = pair_score_targets(teacher, EXAMPLES, str(tmp_path / "cache"))
    assert counter.count == 30  # 10 queries x (1 positive + 2 negatives)
    again = pair_score_targets(teacher, EXAMPLES, str(tmp_path / "cache"))
    assert counter.count == 30  # every pair read from the cache file
    np.testing.assert_array_equal(again.pair_scores, targets.pair_scores)
    dataset = ContrastiveDataset(EXAMPLES, num_negatives=2, seed=0)
    tokenizer_encoder = BiEncoderTeacher(str(tiny_model)).encoder
    batch = TeacherCollator(Collator(tokenizer_encoder.tokenize), targets)([dataset[i] for i in (2, 5)])
    sample = dataset[5]
    expected = teacher.score([sample.query] * 3, sample.passages)
    np.testing.assert_allclose(batch.teacher_scores[1].numpy(), expected, atol=1e-5)


def test_precomputed_teacher_needs_scores_in_the_data(compose, tmp_path: Path) -> None:
    from conftest import make_rows, write_jsonl

    from trainer.data.dataset import load_examples
    from trainer.teachers.targets import build_teacher_targets

    rows = make_rows(8, seed=4, negatives=2)
    cfg = compose("teacher=precomputed", "distill=margin_mse", "data.num_negatives=2",
                  f"data.train_files=[{write_jsonl(tmp_path / 'plain.jsonl', rows)}]")
    examples, _ = load_examples(list(cfg.data.train_files))
    with pytest.raises(ValueError, match="lack pos_scores"):
        build_teacher_targets(cfg, examples)
    for r in rows:
        r["pos_scores"], r["neg_scores"] = [3.0], [1.0, -1.0]
    scored, _ = load_examples([str(write_jsonl(tmp_path / "scored.jsonl", rows))])
    assert build_teacher_targets(cfg, scored) is None  # nothing to run: the collator carries the data's scores
    assert isinstance(PrecomputedTeacher(), Teacher)
    with pytest.raises(ValueError, match="need a teacher"):
        build_teacher_targets(compose("distill=kl"), scored)


def test_distill_configs_compose(compose) -> None:
    from trainer.config import CONF_DIR

    for name in sorted(p.stem for p in (CONF_DIR / "distill").glob("*.yaml")):
        cfg = compose(f"distill={name}", "teacher=mpnet")
        assert cfg.teacher._target_.endswith("BiEncoderTeacher")
    cfg = compose("experiment=distill")
    assert cfg.teacher is not None and cfg.distill.listwise_kl.weight > 0
    assert compose().teacher is None and compose().distill.listwise_kl.weight == 0
    assert text_id("x") == text_id("x")


def test_pair_score_cache_is_keyed_by_the_weights(tiny_model: Path, tmp_path: Path) -> None:
    """A reranker retrained at the same path gets new scores, not the old ones from the cache."""
    from transformers import BertForSequenceClassification

    folder = _tiny_cross_encoder(tiny_model, tmp_path / "ce")
    cache = str(tmp_path / "cache")
    first = pair_score_targets(CrossEncoderTeacher(str(folder), max_length=32), EXAMPLES, cache)
    model = BertForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)  # "retrained": every score moves by +1
    model.save_pretrained(folder, safe_serialization=True)
    retrained = CrossEncoderTeacher(str(folder), max_length=32)
    counter = CountCalls(retrained, "score")
    second = pair_score_targets(retrained, EXAMPLES, cache)
    assert counter.count == 30  # nothing served from the old weights' cache
    np.testing.assert_allclose(second.pair_scores, first.pair_scores + 1.0, atol=1e-4)
    assert len(list(Path(cache).glob("pairs-*.npz"))) == 2  # one file per set of weights


def test_rescore_after_remining_scores_only_the_rows_of_distill_tasks(tiny_model: Path, tmp_path: Path) -> None:
    """Re-mining with a kept cross-encoder: new pairs of rows outside distill.tasks are never scored."""
    from dataclasses import replace

    from trainer.teachers.targets import pair_score_targets, teacher_rows

    teacher = CrossEncoderTeacher(str(_tiny_cross_encoder(tiny_model, tmp_path / "ce")), max_length=32)
    rows = teacher_rows(["news"], EXAMPLES)
    targets = pair_score_targets(teacher, EXAMPLES, None, rows)
    targets.teacher = teacher
    counter = CountCalls(teacher, "score")
    remined = [replace(ex, neg=[f"fresh w{i}"]) for i, ex in enumerate(EXAMPLES)]  # one new negative per row
    targets.rescore(remined)
    assert counter.count == len(rows)  # the 5 news rows' new pairs; before: all 10 rows' (5 of them never used)

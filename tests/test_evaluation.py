"""Evaluation: every metric on a hand-made case, retrieval metrics against independent implementations,
prompt mismatch refused, MTEB-layout outputs, embedding cache, leaderboard, mteb protocol adapter.

    pytest -q tests/test_evaluation.py
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import label_ranking_average_precision_score, ndcg_score

from conftest import write_beir, write_jsonl, make_rows
from trainer.evaluation import metrics
from trainer.evaluation.kinds import load_task
from trainer.evaluation.retrieval import retrieval_metrics
from trainer.evaluation.tasks import TaskFileError


pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------- metrics on hand-made cases

def test_retrieval_metrics_hand_case() -> None:
    # q1: relevant d2 at rank 2 of [d1, d2, d3]; q2: relevant d1 (rank 1) and d9 (never retrieved).
    ranked = {"q1": ["d1", "d2", "d3"], "q2": ["d1", "d4"]}
    qrels = {"q1": {"d2": 1}, "q2": {"d1": 1, "d9": 1}}
    m = retrieval_metrics(ranked, qrels)
    ndcg_q1 = (1 / math.log2(3)) / 1.0
    ndcg_q2 = 1.0 / (1 + 1 / math.log2(3))
    assert m["ndcg_at_10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)
    assert m["mrr_at_10"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["recall_at_1"] == pytest.approx((0 + 0.5) / 2)
    assert m["recall_at_10"] == pytest.approx((1 + 0.5) / 2)
    assert m["map_at_100"] == pytest.approx((0.5 + 0.5) / 2)  # q2: (1/1) / 2 relevant


def test_retrieval_metrics_match_sklearn_on_full_rankings() -> None:
    """Graded qrels, every document ranked: nDCG@10 == sklearn.ndcg_score (linear gain), MAP == LRAP,
    MRR@10 and Recall@k == brute force over the score matrix."""
    rng = np.random.default_rng(0)
    n_q, n_d = 30, 40
    scores = rng.normal(size=(n_q, n_d))  # distinct, so no ties
    rel = np.zeros((n_q, n_d), dtype=int)
    for q in range(n_q):
        rel[q, rng.choice(n_d, size=rng.integers(1, 5), replace=False)] = rng.integers(1, 4)
    ids = [f"d{j}" for j in range(n_d)]
    ranked = {f"q{q}": [ids[j] for j in np.argsort(-scores[q])] for q in range(n_q)}
    qrels = {f"q{q}": {ids[j]: int(rel[q, j]) for j in np.flatnonzero(rel[q])} for q in range(n_q)}
    m = retrieval_metrics(ranked, qrels)
    assert m["ndcg_at_10"] == pytest.approx(ndcg_score(rel, scores, k=10), abs=1e-12)
    assert m["map_at_100"] == pytest.approx(label_ranking_average_precision_score(rel > 0, scores), abs=1e-12)
    order = np.argsort(-scores, axis=1)
    hits = (rel > 0)[np.arange(n_q)[:, None], order]  # (Q, N) relevance in rank order
    first = hits.argmax(axis=1)
    assert m["mrr_at_10"] == pytest.approx(np.mean(np.where(first < 10, 1.0 / (first + 1), 0.0)))
    for k in (1, 10):
        assert m[f"recall_at_{k}"] == pytest.approx(np.mean(hits[:, :k].sum(1) / hits.sum(1)))


def test_sts_scores() -> None:
    e1 = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    e2 = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])  # cosines 1, 0.707, 0, -1
    gold = [5.0, 3.0, 2.0, 0.0]
    s = metrics.sts_scores(e1, e2, gold)
    assert s["cosine_spearman"] == pytest.approx(1.0)
    cos = np.array([1.0, 2 ** -0.5, 0.0, -1.0])
    assert s["cosine_pearson"] == pytest.approx(np.corrcoef(cos, gold)[0, 1])


def test_classification_scores() -> None:
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=float)
    test = np.array([[0.8, 0.2], [0.2, 0.8], [0.7, 0.3]])
    s = metrics.classification_scores(train, ["a", "a", "b", "b"], test, ["a", "b", "a"])
    assert s == {"accuracy": 1.0, "f1": 1.0}
    # one of three wrong: accuracy 2/3; macro-F1 = mean(F1_a = 2/3, F1_b = 2/3)
    s = metrics.classification_scores(train, ["a", "a", "b", "b"], test, ["a", "b", "b"])
    assert s["accuracy"] == pytest.approx(2 / 3) and s["f1"] == pytest.approx(2 / 3)


def test_clustering_scores() -> None:
    emb = np.array([[1, 0], [0.99, 0.05], [0, 1], [0.05, 0.99], [-1, 0], [-0.99, -0.05]], dtype=float)
    assert metrics.clustering_scores(emb, ["x", "x", "y", "y", "z", "z"])["v_measure"] == pytest.approx(1.0)
    # gold labels that cut across the geometric clusters: far from 1
    assert metrics.clustering_scores(emb, ["x", "y", "x", "y", "x", "y"])["v_measure"] < 0.5


def test_pair_classification_scores() -> None:
    e1 = np.array([[1.0, 0.0]] * 3)
    e2 = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # cos 1, 0.71, 0 -> ranking: pos, neg, pos
    assert metrics.pair_classification_scores(e1, e2, [1, 0, 1])["cosine_ap"] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.pair_classification_scores(e1, e2, [1, 2, 0])


def test_reranking_scores() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    c1 = np.array([[1.0, 0.1], [0.9, 0.5], [0.0, 1.0]])  # cos order: c0, c1, c2
    c2 = np.array([[0.0, 1.0], [1.0, 0.0], [0.3, 0.9]])  # cos order: c0, c2, c1
    s = metrics.reranking_scores(q, [c1, c2], [np.array([0, 1, 0]), np.array([1, 1, 0])])
    # q1: relevant at rank 2 -> AP 0.5, RR 0.5; q2: relevant at ranks 1 and 3 -> AP (1 + 2/3)/2, RR 1
    assert s["map"] == pytest.approx((0.5 + (1 + 2 / 3) / 2) / 2)
    assert s["mrr"] == pytest.approx(0.75)
    # independent: MRR with one relevant candidate per query == sklearn LRAP
    rng = np.random.default_rng(1)
    qs, cands = rng.normal(size=(6, 4)), [rng.normal(size=(5, 4)) for _ in range(6)]
    rels = [np.eye(5, dtype=int)[i % 5] for i in range(6)]
    s = metrics.reranking_scores(qs, cands, rels)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    cos = np.stack([unit(c) @ unit(qv) for qv, c in zip(qs, cands)])
    assert s["mrr"] == pytest.approx(label_ranking_average_precision_score(np.stack(rels), cos))


def test_task_file_errors_name_file_line_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "sts.jsonl", [{"sentence1": "a", "sentence2": "b", "score": 1},
                                                {"sentence1": "a", "sentence2": "", "score": 2}])
    with pytest.raises(TaskFileError, match=r"sts.jsonl:2: sentence2: expected a non-empty string"):
        load_task({"name": "x", "kind": "sts", "path": str(path)})
    path = write_jsonl(tmp_path / "pc.jsonl", [{"sentence1": "a", "sentence2": "b", "label": 3}])
    with pytest.raises(TaskFileError, match=r"pc.jsonl:1: label: expected 0 or 1"):
        load_task({"name": "x", "kind": "pair_classification", "path": str(path)})
    with pytest.raises(FileNotFoundError, match="prepare_eval"):
        load_task({"name": "x", "kind": "clustering", "path": str(tmp_path / "missing.jsonl")})


# ---------------------------------------------------------------- checkpoints, prompts, outputs

def tiny_tasks(root: Path) -> list[dict[str, Any]]:
    """One small task file per kind, plus a task whose file is missing (it must fail and be recorded)."""
    rng = random.Random(0)

    def words(lo: int, n: int = 4) -> str:
        return " ".join(f"w{rng.randrange(lo, lo + 50)}" for _ in range(n))

    cls = [{"text": words(0 if i % 2 else 100), "label": "a" if i % 2 else "b", "split": "train" if i < 16 else "test"}
           for i in range(24)]
    pairs = [{"sentence1": words(0), "sentence2": words(0), "score": i % 5, "label": i % 2} for i in range(10)]
    rerank = [{"query": words(0), "positive": [words(0)], "negative": [words(100), words(150)]} for _ in range(5)]
    files = {"cls": write_jsonl(root / "cls.jsonl", cls),
             "sts": write_jsonl(root / "sts.jsonl", [{k: p[k] for k in ("sentence1", "sentence2", "score")}
                                                     for p in pairs]),
             "pc": write_jsonl(root / "pc.jsonl", [{k: p[k] for k in ("sentence1", "sentence2", "label")}
                                                   for p in pairs]),
             "rr": write_jsonl(root / "rr.jsonl", rerank)}
    beir = write_beir(root / "beir", make_rows(12, seed=3))
    return [{"name": "ret", "kind": "retrieval", "path": str(beir), "split": "test", "task": "news",
             "main_score": "ndcg_at_10"},
            {"name": "cls", "kind": "classification", "path": str(files["cls"]), "main_score": "ndcg_at_10"},
            {"name": "clu", "kind": "clustering", "path": str(files["cls"]), "split": "test"},
            {"name": "sts", "kind": "sts", "path": str(files["sts"])},
            {"name": "pc", "kind": "pair_classification", "path": str(files["pc"])},
            {"name": "rr", "kind": "reranking", "path": str(files["rr"])},
            {"name": "broken", "kind": "sts", "path": str(root / "nope.jsonl")}]


def make_checkpoint(tiny_model: Path, target: Path, step: int = 10, **prompts: Any) -> Path:
    from trainer.models.checkpoint import save_checkpoint
    from trainer.models.encoder import Encoder, EncoderSpec
    from trainer.models.prompts import PromptSpec

    spec = EncoderSpec(max_length_query=16, max_length_passage=32, prompts=PromptSpec(**prompts))
    return save_checkpoint(Encoder.from_pretrained(str(tiny_model), spec), target, {"step": step, "config_hash": "x"})


@pytest.fixture(scope="module")
def e5_checkpoint(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e5run")
    return make_checkpoint(tiny_model, root / "checkpoints" / "step-000010", query_prefix="query: ",
                           passage_prefix="passage: ")


def test_prompt_mismatch_refused_unless_overridden(e5_checkpoint: Path, tmp_path: Path) -> None:
    from trainer.evaluation.runner import PromptMismatch, evaluate_checkpoint

    tasks = tiny_tasks(tmp_path)[:1]
    bad = [{**tasks[0], "query_prefix": "search_query: "}]
    with pytest.raises(PromptMismatch, match=r"query_prefix='search_query: ' \(checkpoint: 'query: '\).*"
                                             r"allow_prompt_override=true"):
        evaluate_checkpoint(e5_checkpoint, bad, tmp_path / "out", device="cpu", log=lambda _: None)
    assert not (tmp_path / "out").exists()  # refused before anything ran
    same = [{**tasks[0], "query_prefix": "query: "}]  # equal to the checkpoint's: fine
    ok = evaluate_checkpoint(e5_checkpoint, same, tmp_path / "same", device="cpu", log=lambda _: None)
    assert ok["ret"]["embedstill"]["prompts"]["override"] is False
    forced = evaluate_checkpoint(e5_checkpoint, [{**bad[0], "allow_prompt_override": True}], tmp_path / "forced",
                                 device="cpu", log=lambda _: None)
    assert forced["ret"]["embedstill"]["prompts"]["query_prefix"] == "search_query: "
    assert forced["ret"]["embedstill"]["prompts"]["override"] is True


def test_outputs_mteb_layout_failures_recorded_and_cache_reused(e5_checkpoint: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.evaluation.leaderboard import update_run_reports
    from trainer.evaluation.runner import evaluate_checkpoint
    from trainer.models.encoder import Encoder

    tasks = tiny_tasks(tmp_path)
    out = tmp_path / "run" / "eval" / "step-000010"
    calls: list[int] = []
    real_encode = Encoder.encode

    def counting(self: Encoder, texts: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(len(texts))
        return real_encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", counting)
    first = evaluate_checkpoint(e5_checkpoint, tasks, out, device="cpu", log=lambda _: None)
    assert calls, "nothing was encoded"
    expected = {"ret": "ndcg_at_10", "cls": "accuracy", "clu": "v_measure", "sts": "cosine_spearman",
                "pc": "cosine_ap", "rr": "map"}
    for name, main in expected.items():
        record = json.loads((out / f"{name}.json").read_text())
        assert set(record) >= {"task_name", "scores", "evaluation_time", "dataset_revision", "mteb_version"}
        assert record["task_name"] == name and record["embedstill"]["status"] == "ok"
        (split, rows), = record["scores"].items()
        assert rows[0]["main_score"] == rows[0][main] and math.isfinite(rows[0]["main_score"])
        assert record["embedstill"]["model"]["step"] == 10
        assert record["embedstill"]["prompts"]["query_prefix"] == "query: "
    broken = json.loads((out / "broken.json").read_text())
    assert broken["embedstill"]["status"] == "failed" and "nope.jsonl" in broken["embedstill"]["error"]
    assert broken["scores"] == {"test": []}
    assert json.loads((out / "model_meta.json").read_text())["encoder"]["prompts"]["query_prefix"] == "query: "
    # A re-run reads every embedding from the per-checkpoint cache and gives the same scores.
    calls.clear()
    second = evaluate_checkpoint(e5_checkpoint, tasks, out, device="cpu", log=lambda _: None)
    assert calls == []
    for name in expected:
        assert second[name]["scores"] == first[name]["scores"]
    rows = update_run_reports(tmp_path / "run")
    assert rows[0]["step"] == 10 and rows[0]["broken"] is None
    csv_text = (tmp_path / "run" / "eval" / "leaderboard.csv").read_text().splitlines()
    assert csv_text[0].split(",")[:3] == ["run", "checkpoint", "step"]
    assert "failed" in (tmp_path / "run" / "eval" / "leaderboard.md").read_text()
    png = tmp_path / "run" / "eval" / "plots" / "ret.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_instruction_checkpoint_refuses_unknown_task(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.evaluation.runner import PromptMismatch, task_prompts
    from trainer.models.encoder import Encoder

    ckpt = make_checkpoint(tiny_model, tmp_path / "inst", instruction_template="Instruct: {instruction}\nQuery: {text}",
                           instructions={"news": "find the article"})
    encoder = Encoder.from_pretrained(str(ckpt))
    assert encoder.spec.prompts.instructions == {"news": "find the article"}  # read from embedstill.json
    assert task_prompts(encoder, {"name": "t", "task": "news"}) == (encoder, None)
    with pytest.raises(PromptMismatch, match="has no instruction in the checkpoint"):
        task_prompts(encoder, {"name": "t", "task": "wordnet"})


def test_mteb_protocol_adapter(e5_checkpoint: Path) -> None:
    """Protocol-shaped test (mteb itself is not installed): both call shapes, prompts per prompt type."""
    from enum import Enum

    from trainer.evaluation.mteb_adapter import MTEBModel
    from trainer.models.encoder import Encoder

    class PromptType(str, Enum):  # mirrors mteb.encoder_interface.PromptType
        query = "query"
        passage = "passage"

    model = MTEBModel(e5_checkpoint, device="cpu", task_types={"NFCorpus": "Retrieval", "STSBenchmark": "STS"})
    reference = Encoder.from_pretrained(str(e5_checkpoint))
    texts = ["w1 w2 w3", "w4 w5"]
    q = model.encode(texts, task_name="NFCorpus", prompt_type=PromptType.query)
    p = model.encode(texts, task_name="NFCorpus", prompt_type=PromptType.passage)
    sym = model.encode(texts, task_name="STSBenchmark")
    assert q.shape == (2, reference.dim) and q.dtype == np.float32
    np.testing.assert_allclose(q, reference.encode(texts, side="query"), atol=1e-6)
    np.testing.assert_allclose(p, reference.encode(texts, side="passage"), atol=1e-6)
    np.testing.assert_allclose(sym, q, atol=1e-6)  # symmetric tasks use the query side by default
    assert not np.allclose(q, p)  # "query: " vs "passage: " prefixes

    class Meta:  # mteb 2.x: a DataLoader of {"text": [...]} batches and task_metadata
        name, type = "NFCorpus", "Retrieval"

    batches = [{"text": texts[:1]}, {"text": texts[1:]}]
    np.testing.assert_allclose(model.encode(batches, task_metadata=Meta(), prompt_type="document"), p, atol=1e-6)
    assert model.similarity(q, p).shape == (2, 2)
    np.testing.assert_allclose(model.similarity_pairwise(q, q), [1.0, 1.0], atol=1e-5)


def test_evaluate_config_composes_and_runs(e5_checkpoint: Path, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs
    from trainer.evaluation.watcher import run_from_config

    register_configs()
    beir = write_beir(tmp_path / "beir", make_rows(12, seed=4))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"checkpoint={e5_checkpoint}", "eval=news", "device=cpu",
                                             f"eval.tasks.0.path={beir}", f"out_dir={tmp_path / 'out'}"])
        suite = compose("evaluate", overrides=["eval=suite"])
        with pytest.raises(Exception, match="idle_timout_seconds"):  # a typo fails at compose time
            compose("evaluate", overrides=["idle_timout_seconds=3"])
    assert {t.kind for t in suite.eval.tasks} == {"retrieval", "classification", "clustering",
                                                  "pair_classification", "reranking"}
    value = run_from_config(cfg, log=lambda _: None)
    record = json.loads((tmp_path / "out" / "news.json").read_text())
    assert value == pytest.approx(record["scores"]["test"][0]["ndcg_at_10"])


def test_retrieval_metrics_match_pytrec_eval() -> None:
    """The implementation BEIR and MTEB use (installed with the optional `mteb` extra)."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(2)
    run, qrels, ranked = {}, {}, {}
    for q in range(25):
        scores = rng.normal(size=150)
        docs = [f"d{j}" for j in range(150)]
        order = np.argsort(-scores)
        ranked[f"q{q}"] = [docs[j] for j in order[:100]]  # our top-100 list
        run[f"q{q}"] = {docs[j]: float(scores[j]) for j in order[:100]}
        qrels[f"q{q}"] = {docs[j]: int(rng.integers(1, 3)) for j in rng.choice(150, rng.integers(1, 6), replace=False)}
    ours = retrieval_metrics(ranked, qrels)
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map_cut.100", "recall.1,10,100", "recip_rank"})
    per_query = ev.evaluate(run)
    mean = {k: np.mean([v[k] for v in per_query.values()]) for k in next(iter(per_query.values()))}
    assert ours["ndcg_at_10"] == pytest.approx(mean["ndcg_cut_10"], abs=1e-9)
    assert ours["map_at_100"] == pytest.approx(mean["map_cut_100"], abs=1e-9)
    for k in (1, 10, 100):
        assert ours[f"recall_at_{k}"] == pytest.approx(mean[f"recall_{k}"], abs=1e-9)
    cut = {q: {d: s for d, s in r.items() if d in ranked[q][:10]} for q, r in run.items()}  # MRR@10 = RR on top 10
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    assert ours["mrr_at_10"] == pytest.approx(np.mean([v["recip_rank"] for v in rr.values()]), abs=1e-9)


@pytest.mark.slow
def test_mteb_runs_the_adapter_offline(e5_checkpoint: Path) -> None:
    """The real mteb package (if installed) runs our adapter on its bundled offline mock tasks."""
    mteb = pytest.importorskip("mteb")
    from mteb.mocks.mock_tasks import classification, retrieval

    from trainer.evaluation.mteb_adapter import MTEBModel

    model = MTEBModel(e5_checkpoint, device="cpu")
    assert isinstance(model, mteb.models.models_protocols.EncoderProtocol)
    calls: list[tuple[str, Any]] = []
    real = model.prompt_for

    def spy(task_name: Any, prompt_type: Any = None, task_metadata: Any = None) -> Any:
        calls.append((task_name, getattr(prompt_type, "value", prompt_type)))
        return real(task_name, prompt_type, task_metadata)

    model.prompt_for = spy  # type: ignore[method-assign]
    result = mteb.evaluate(model, [retrieval.MockRetrievalTask(), classification.MockClassificationTask()],
                           cache=None, show_progress_bar=False)
    scores = {r.task_name: r.get_score() for r in result.task_results}
    assert set(scores) == {"MockRetrievalTask", "MockClassificationTask"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert ("MockRetrievalTask", "query") in calls and ("MockRetrievalTask", "document") in calls
    assert ("MockClassificationTask", None) in calls

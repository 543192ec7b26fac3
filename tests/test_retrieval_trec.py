"""Retrieval metrics equal pytrec_eval (trec_eval, and so BEIR and MTEB) on every kind of query, and BEIR's
identical-id exclusion.

    pytest -q tests/test_retrieval_trec.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import write_jsonl
from trainer.evaluation.retrieval import RetrievalData, evaluate_retrieval, load_beir, retrieval_metrics

pytrec_eval = pytest.importorskip("pytrec_eval")

MEASURES = {"ndcg_cut.10", "map_cut.100", "recall.1,10,100"}
OURS_TO_TREC = {"ndcg_at_10": "ndcg_cut_10", "map_at_100": "map_cut_100", "recall_at_1": "recall_1",
                "recall_at_10": "recall_10", "recall_at_100": "recall_100"}


def trec_means(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """pytrec_eval's per-query values averaged over the queries it scores (judged queries of the run)."""
    per_query = pytrec_eval.RelevanceEvaluator(qrels, MEASURES).evaluate(run)
    means = {ours: float(np.mean([v[trec] for v in per_query.values()])) for ours, trec in OURS_TO_TREC.items()}
    top10 = {q: dict(sorted(r.items(), key=lambda kv: -kv[1])[:10]) for q, r in run.items()}  # MRR@10 = RR@10
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    means["mrr_at_10"] = float(np.mean([v["recip_rank"] for v in rr.values()]))
    return means


def as_run(ranked: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """A ranked list as a trec run with strictly decreasing scores (no ties, so both sides rank alike)."""
    return {q: {d: float(len(docs) - r) for r, d in enumerate(docs)} for q, docs in ranked.items()}


def every_query_kind() -> tuple[dict[str, list[str]], dict[str, dict[str, int]]]:
    """One query of each kind the metrics must treat as trec_eval does."""
    docs = [f"d{j}" for j in range(400)]
    rng = np.random.default_rng(7)
    ranked = {q: [docs[j] for j in rng.permutation(400)[:100]] for q in
              ("graded", "none_retrieved", "all_zero", "many_relevant", "negative", "short", "unjudged")}
    ranked["short"] = ranked["short"][:7]  # fewer than 100 retrieved
    qrels = {
        "graded": {ranked["graded"][0]: 1, ranked["graded"][3]: 3, ranked["graded"][40]: 2, "d-missing": 1},
        "none_retrieved": {"d-elsewhere": 1, "d-also-elsewhere": 2},  # relevant documents, none retrieved
        "all_zero": {ranked["all_zero"][0]: 0, ranked["all_zero"][5]: 0},  # judged, nothing relevant
        # 150 relevant documents: MAP@100 divides by 150, not by min(150, 100)
        "many_relevant": {d: 1 for d in ranked["many_relevant"][::2] + [f"extra{i}" for i in range(100)]},
        "negative": {ranked["negative"][0]: -1, ranked["negative"][2]: 1},  # a negative label counts as 0
        "short": {ranked["short"][6]: 1, "d-beyond": 1},
        "judged_not_run": {"d1": 1},  # in the qrels but never searched: not part of either mean
    }
    return ranked, qrels  # "unjudged" has no qrels at all: left out, as pytrec_eval does


def test_every_query_kind_equals_pytrec_eval() -> None:
    ranked, qrels = every_query_kind()
    ours = retrieval_metrics(ranked, qrels)
    want = trec_means(as_run(ranked), qrels)
    assert set(ours) == set(want)
    for name in want:
        assert ours[name] == pytest.approx(want[name], abs=1e-12), name


@pytest.mark.parametrize("kind", ["graded", "none_retrieved", "all_zero", "many_relevant", "negative", "short"])
def test_each_query_kind_alone_equals_pytrec_eval(kind: str) -> None:
    ranked, qrels = every_query_kind()
    ours = retrieval_metrics({kind: ranked[kind]}, {kind: qrels[kind]})
    want = trec_means(as_run({kind: ranked[kind]}), {kind: qrels[kind]})
    for name in want:
        assert ours[name] == pytest.approx(want[name], abs=1e-12), (kind, name)


def identical_id_data(root: Path) -> RetrievalData:
    """Corpus documents q0..q5 share their ids with the queries (ArguAna style), plus d0..d29."""
    rows = [{"_id": f"q{i}", "text": f"w{i} w{i}"} for i in range(6)] + [{"_id": f"d{j}", "text": f"w{j + 50}"}
                                                                          for j in range(30)]
    write_jsonl(root / "corpus.jsonl", rows)
    write_jsonl(root / "queries.jsonl", [{"_id": f"q{i}", "text": f"w{i} w{i}"} for i in range(6)])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{3 * i}\t1\nq{i}\tq{i}\t0\n" for i in range(6)))
    return load_beir(root, "test", ignore_identical_ids=True)


def test_identical_ids_are_never_retrieved_and_the_rest_equals_pytrec_eval(tmp_path: Path) -> None:
    from trainer.evaluation.kinds import load_task

    data = identical_id_data(tmp_path)
    assert data.ignore_identical_ids
    task = {"name": "args", "kind": "retrieval", "path": str(tmp_path), "ignore_identical_ids": True}
    assert load_task(task).ignore_identical_ids  # the task option reaches the data every evaluator scores
    rng = np.random.default_rng(0)
    corpus_emb = rng.normal(size=(len(data.corpus), 8)).astype(np.float32)
    corpus_emb /= np.linalg.norm(corpus_emb, axis=1, keepdims=True)  # unit rows: inner product = cosine
    query_emb = corpus_emb[:6].copy()  # each query's nearest document is the one with its own id

    def embed(texts: list[str], side: str) -> np.ndarray:
        return query_emb if side == "query" else corpus_emb

    kept: dict[str, list[str]] = {}
    real = retrieval_metrics

    def spy(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
        kept.update(ranked)
        return real(ranked, qrels)

    import trainer.evaluation.retrieval as retrieval

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrieval, "retrieval_metrics", spy)
        ours = evaluate_retrieval(None, data, embed=embed, top_k=10)  # type: ignore[arg-type]
    scores = query_emb @ corpus_emb.T  # (6, 36)
    run = {}
    for i, qid in enumerate(data.query_ids):
        order = [data.corpus_ids[j] for j in np.argsort(-scores[i])]
        assert order[0] == qid  # without the exclusion the query's own document would be first
        run[qid] = {d: float(scores[i, data.corpus_ids.index(d)]) for d in [d for d in order if d != qid][:10]}
        assert kept[qid] == list(run[qid]) and qid not in kept[qid]  # still 10 documents after the exclusion
    want = trec_means(run, data.qrels)
    for name in want:
        assert ours[name] == pytest.approx(want[name], abs=1e-6), name
    plain = evaluate_retrieval(None, load_beir(tmp_path, "test"), embed=embed, top_k=10)  # type: ignore[arg-type]
    assert plain != ours  # the option is off by default: identical ids are retrieved

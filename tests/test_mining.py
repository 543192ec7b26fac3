"""Hard-negative mining: exact search, every selection rule by hand, teachers, ANN recall, cache, end to end.

    pytest -q tests/test_mining.py
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import torch

from trainer.data.dataset import load_examples
from trainer.data.schema import DataError, Example
from trainer.mining.config import IndexConfig, SelectConfig, TeacherFilterConfig
from trainer.mining.index import build_index, search
from trainer.encoding import text_keys
from trainer.mining.candidates import ExampleKeys
from trainer.mining.pipeline import load_corpus, mine_negatives
from trainer.mining.select import candidates, mask_columns, positive_matrix, sample, sample_top
from trainer.mining.teacher import teacher_filter
from trainer.models.encoder import Encoder, EncoderSpec


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_search_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    corpus, queries = unit(rng.normal(size=(500, 16))), unit(rng.normal(size=(37, 16)))
    scores, ids = search(build_index(corpus), queries, k=10, batch=8)  # 5 chunks of queries
    full = queries @ corpus.T  # (37, 500): fine at this size, the reference only
    expected = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), atol=1e-5)
    s, i = search(build_index(corpus[:3]), queries, k=10)
    assert i.shape == (37, 3)  # k capped at the corpus size


def clustered(n_clusters: int, per: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = unit(rng.normal(size=(n_clusters, dim)))
    corpus = unit(np.repeat(centers, per, 0) + 0.15 * rng.normal(size=(n_clusters * per, dim)))
    queries = unit(centers[rng.integers(n_clusters, size=200)] + 0.15 * rng.normal(size=(200, dim)))
    return corpus, queries


@pytest.mark.parametrize("cfg", [IndexConfig(kind="ivf", nlist=64, nprobe=8), IndexConfig(kind="hnsw")])
def test_approximate_index_recall_on_clustered_data(cfg: IndexConfig) -> None:
    corpus, queries = clustered(n_clusters=60, per=80, dim=32, seed=1)
    _, exact = search(build_index(corpus), queries, k=10)
    _, approx = search(build_index(corpus, cfg), queries, k=10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.tolist(), exact.tolist())])
    assert recall >= 0.9, recall


# One query, positive score 0.8, candidates in score order: (text id, score).
CANDS = [(10, 0.90), (20, 0.85), (30, 0.79), (30, 0.78), (40, 0.77), (50, 0.74), (60, 0.70), (70, 0.50), (-1, 0.0)]


def select(**kwargs: Any) -> tuple[list[int], Counter]:
    cfg = SelectConfig(**{"relative": None, "max_rank": 100, **kwargs})
    tids = np.array([[t for t, _ in CANDS]], dtype=np.int64)
    scores = np.array([[s for _, s in CANDS]], dtype=np.float32)
    counts: Counter = Counter()
    kept = candidates(tids, scores, [{10}], np.array([20]), np.array([0.8], dtype=np.float32), cfg, counts)
    return [int(tids[0, c]) for c in kept[0]], counts


def test_exclusions_positive_query_text_duplicates_missing() -> None:
    kept, counts = select()
    assert kept == [30, 40, 50, 60, 70]
    assert counts == Counter(positive=1, same_text=2, missing=1)  # query text (20) and the second 30
    kept, counts = select(exclude_query_text=False)
    assert kept == [20, 30, 40, 50, 60, 70] and counts["same_text"] == 1


def test_rank_window() -> None:
    kept, counts = select(skip_top=1, max_rank=3)  # ranks: 30:1 40:2 50:3 60:4 70:5
    assert kept == [40, 50] and counts["rank_window"] == 3
    with pytest.raises(ValueError, match="skip_top < max_rank"):
        select(skip_top=3, max_rank=3)


def test_absolute_margin_relative_and_max_score() -> None:
    kept, counts = select(margin=0.05)  # keep < 0.75
    assert kept == [50, 60, 70] and counts["margin"] == 2
    kept, counts = select(relative=0.95)  # keep < 0.76
    assert kept == [50, 60, 70] and counts["relative"] == 2
    kept, counts = select(relative=0.9)  # keep < 0.72
    assert kept == [60, 70] and counts["relative"] == 3
    kept, counts = select(max_score=0.72)  # keep <= 0.72
    assert kept == [60, 70] and counts["max_score"] == 3
    kept, counts = select(margin=0.05, relative=0.9)  # each removal counted under the first rule
    assert kept == [60, 70] and (counts["margin"], counts["relative"]) == (2, 1)


def test_relative_rule_is_sign_safe() -> None:
    cfg = SelectConfig(relative=0.9, max_rank=10)
    tids = np.array([[1, 2]], dtype=np.int64)
    scores = np.array([[-0.21, -0.23]], dtype=np.float32)  # threshold: -0.2 - 0.2 * 0.1 = -0.22
    kept = candidates(tids, scores, [set()], np.array([9]), np.array([-0.2], dtype=np.float32), cfg, Counter())
    assert kept == [[1]]


def reference_candidates(tids: np.ndarray, scores: np.ndarray, pos: list[set[int]], query: np.ndarray,
                         pos_scores: np.ndarray, cfg: SelectConfig) -> tuple[list[list[int]], Counter]:
    """The rules written as a plain loop, one candidate at a time (the module's version is vectorised)."""
    counts: Counter = Counter()
    out = []
    for q in range(len(tids)):
        seen: set[int] = set()
        rank, kept = 0, []
        for c, tid in enumerate(tids[q].tolist()):
            if tid == -1:
                counts["missing"] += 1
            elif tid in seen:
                counts["same_text"] += 1
            elif tid in pos[q]:
                counts["positive"] += 1
            elif cfg.exclude_query_text and tid == query[q]:
                counts["same_text"] += 1
            else:
                rank += 1
                s, p = float(scores[q, c]), float(pos_scores[q])
                if rank <= cfg.skip_top or rank > cfg.max_rank:
                    counts["rank_window"] += 1
                elif cfg.margin is not None and not s < p - cfg.margin:
                    counts["margin"] += 1
                elif cfg.relative is not None and not s < p - abs(p) * (1 - cfg.relative):
                    counts["relative"] += 1
                elif cfg.max_score is not None and s > cfg.max_score:
                    counts["max_score"] += 1
                else:
                    kept.append(c)
            if tid != -1:
                seen.add(tid)
        out.append(kept)
    return out, counts


def test_vectorised_rules_equal_a_plain_loop() -> None:
    rng = np.random.default_rng(5)
    tids = rng.integers(0, 40, size=(50, 30))  # small id range: many duplicates, positives, query copies
    tids[rng.random(tids.shape) < 0.05] = -1
    scores = -np.sort(-rng.random(tids.shape), axis=1).astype(np.float32)
    pos = [set(rng.integers(0, 40, size=int(rng.integers(1, 4))).tolist()) for _ in range(50)]
    query, pos_scores = rng.integers(0, 40, size=50), rng.uniform(-0.2, 1.0, size=50).astype(np.float32)
    for cfg in [SelectConfig(margin=0.05, relative=0.9, max_score=0.8, skip_top=2, max_rank=12),
                SelectConfig(relative=None, exclude_query_text=False, max_rank=5)]:
        counts: Counter = Counter()
        got = candidates(tids, scores, pos, query, pos_scores, cfg, counts)
        want, want_counts = reference_candidates(tids, scores, pos, query, pos_scores, cfg)
        assert got == want and +counts == want_counts


def test_sampling_top_random_and_short() -> None:
    survivors = [[2, 4, 5, 6, 7], [1]]
    counts: Counter = Counter()
    assert sample(survivors, SelectConfig(num_negatives=2), np.arange(2), counts) == [[2, 4], [1]]
    assert counts == Counter(selected=3, not_sampled=3, queries_short=1)
    draws = {tuple(sample(survivors, SelectConfig(num_negatives=2, sampling="random", seed=s), np.arange(2),
                          Counter())[0]) for s in range(20)}
    assert len(draws) > 3 and all(len(d) == 2 and set(d) <= {2, 4, 5, 6, 7} and list(d) == sorted(d)
                                  for d in draws)
    again = sample(survivors, SelectConfig(num_negatives=2, sampling="random", seed=3), np.arange(2), Counter())
    assert again == sample(survivors, SelectConfig(num_negatives=2, sampling="random", seed=3), np.arange(2),
                           Counter())


def test_vectorised_top_sampling_and_positive_matrix_equal_the_plain_versions() -> None:
    alive = np.random.default_rng(0).random((200, 30)) < 0.2  # (Q, K) survivors, some rows empty or short
    plain_counts: Counter = Counter()
    plain = sample(mask_columns(alive), SelectConfig(num_negatives=3), np.arange(200), plain_counts)
    counts: Counter = Counter()
    assert mask_columns(sample_top(alive, 3, counts)) == plain and counts == plain_counts
    examples = [Example(query=f"q{i}", pos=[f"p{i}-{j}" for j in range(1 + i % 3)]) for i in range(7)]
    matrix = ExampleKeys.of(examples).positive_matrix()  # (7, 3)
    assert matrix.shape == (7, 3)
    expected = [set(text_keys(ex.pos).tolist()) for ex in examples]
    assert [set(row[row != -2].tolist()) for row in matrix] == expected
    assert (np.sort(matrix, 1) == np.sort(positive_matrix(expected), 1)).all()  # same padding too


def test_jsonl_lines_equal_json_dumps() -> None:
    from trainer.mining.report import jsonl_lines  # noqa: PLC0415

    rows = [{"query": 'a "quoted" q\\', "pos": ["é ü \n line", "x"], "neg": [], "task": "t"},
            {"query": "q2", "pos": ["x"], "neg": ["é ü \n line", "\u2028 tab\t"], "pos_scores": [0.5],
             "neg_scores": [0.25, -1e-7], "instruction": "Find"}]
    assert list(jsonl_lines(rows)) == [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]


class TableTeacher:
    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        return np.array([self.table[p] for p in passages], dtype=np.float32)


def test_teacher_filter_drops_near_positive_and_returns_scores() -> None:
    teacher = TableTeacher({"p": 0.9, "p2": 0.7, "a": 0.95, "b": 0.66, "c": 0.3, "d": 0.1})
    counts: Counter = Counter()
    kept, neg, pos = teacher_filter(teacher, ["q"], [["p", "p2"]], [["a", "b", "c", "d"]],
                                    TeacherFilterConfig(margin=0.05), counts)
    # The weakest positive is 0.7: a (0.95, above) and b (0.66, within 0.05) go.
    assert kept == [["c", "d"]] and neg == [[pytest.approx(0.3), pytest.approx(0.1)]]
    assert pos == [[pytest.approx(0.9), pytest.approx(0.7)]] and counts["teacher"] == 2
    kept, _, _ = teacher_filter(teacher, ["q"], [["p"]], [["c", "a", "d"]], TeacherFilterConfig(max_candidates=2),
                                counts)
    assert kept == [["c"]] and counts["teacher_unscored"] == 1


def test_cross_encoder_teacher_filter(tiny_model: Path, tmp_path: Path) -> None:
    """A tiny random sequence-classification model as teacher: the filter keeps exactly what its logits say."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from trainer.mining.teacher import build_teacher

    config = AutoConfig.from_pretrained(tiny_model, num_labels=1)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "ce")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "ce")
    cfg = TeacherFilterConfig(margin=0.0)
    teacher = build_teacher({"_target_": "trainer.teachers.CrossEncoderTeacher", "name_or_path": str(tmp_path / "ce"),
                             "batch_size": 2})
    query, positive, cands = "w1 w2", "w1 w2 w9 w9 w9", ["w7", "w8 the news", "w1 w3", "w2 w2 w2 w4"]
    with torch.no_grad():  # one pair at a time: no padding, no sorting
        logit = {p: float(teacher.model(**teacher.tokenizer(query, p, return_tensors="pt")).logits[0, 0])
                 for p in [positive, *cands]}
    kept, neg, pos = teacher_filter(teacher, [query], [[positive]], [cands], cfg, Counter())
    assert pos[0][0] == pytest.approx(logit[positive], abs=1e-5)
    assert kept[0] == [c for c in cands if logit[c] < logit[positive]]
    assert neg[0] == [pytest.approx(logit[c], abs=1e-5) for c in kept[0]]


def tiny_examples() -> list[Example]:
    rows = [("w1 w2 w3", "w1 w2 w3 w50 w51"), ("w4 w5 w6", "w4 w5 w6 w52 w53"), ("w7 w8", "w7 w8 w54 w55 w56"),
            ("w9 w10", "w9 w10 w57"), ("w11 w12", "w11 w12 w58 w59")]
    return [Example(query=q, pos=[p]) for q, p in rows]


CORPUS = [f"w{i} w{i + 1} w{(i * 7) % 200} the news" for i in range(60)] + [ex.pos[0] for ex in tiny_examples()]


def test_mine_negatives_cache_and_bad_input(tiny_model: Path, tmp_path: Path) -> None:
    from tests.test_encoding import Counting  # noqa: PLC0415

    enc = Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_passage=32))
    counter = Counting(enc)
    sel = SelectConfig(num_negatives=3, relative=None, max_rank=10)
    first = mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(), sel, cache_root=tmp_path)
    assert counter.texts == len(CORPUS) + 5 and all(len(n) == 3 for n in first.negatives)
    assert first.counts["positive"] == 5 and first.counts["selected"] == 15
    assert not any(set(n) & set(ex.pos) for n, ex in zip(first.negatives, tiny_examples()))
    second = mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(), sel, cache_root=tmp_path)
    assert counter.texts == len(CORPUS) + 5 and second.negatives == first.negatives  # all from the cache
    enc.spec.prompts.query_prefix = "query: "
    mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(), sel, cache_root=tmp_path)
    assert counter.texts == len(CORPUS) + 10  # a new prompt re-encodes the queries only
    # Positives absent from the corpus: encoded separately and counted, never silently dropped.
    res = mine_negatives(enc, tiny_examples(), CORPUS[:60], IndexConfig(), sel, cache_root=tmp_path)
    assert res.counts["positives_not_in_corpus"] == 5 and res.counts["positive"] == 0
    with pytest.raises(ValueError, match="corpus is empty"):
        mine_negatives(enc, tiny_examples(), [], IndexConfig(), sel)
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"id": "1", "text": "ok"}\n{"id": "2", "text": ""}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: text: must be a non-empty string"):
        load_corpus(bad)


def test_search_result_cache_serves_new_rules_and_misses_on_change(tiny_model: Path, tmp_path: Path) -> None:
    """A second run with other selection rules reuses the search (no encoding, same output as without a cache);
    a changed corpus order, index or k is a new search."""
    from tests.test_encoding import Counting  # noqa: PLC0415

    enc = Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_passage=32))
    counter = Counting(enc)
    loose = SelectConfig(num_negatives=3, relative=None, max_rank=10)
    first = mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(), loose, cache_root=tmp_path)
    assert "candidates_cached" not in first.counts and len(list((tmp_path / "candidates").glob("*.npz"))) == 1
    encoded = counter.texts
    strict = SelectConfig(num_negatives=2, relative=None, skip_top=1, max_rank=8, sampling="random", seed=3)
    cached = mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(), strict, cache_root=tmp_path)
    plain = mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(), strict, cache_root=None)
    assert cached.counts["candidates_cached"] == 1 and counter.texts == encoded + len(CORPUS) + 5  # plain only
    assert cached.negatives == plain.negatives and all(len(n) == 2 for n in cached.negatives)
    assert cached.negatives != first.negatives  # the new rules did apply
    np.testing.assert_allclose(np.array(cached.neg_scores), np.array(plain.neg_scores), atol=1e-6)
    np.testing.assert_allclose(cached.pos_scores, plain.pos_scores, atol=1e-6)
    assert cached.cache_keys["candidates"] == first.cache_keys["candidates"]
    changed = [mine_negatives(enc, tiny_examples(), CORPUS[::-1], IndexConfig(), loose, cache_root=tmp_path),
               mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(kind="hnsw"), loose, cache_root=tmp_path),
               mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(), SelectConfig(max_rank=20),
                              cache_root=tmp_path)]  # deeper than stored: searched again, stored deeper
    assert all("candidates_cached" not in r.counts for r in changed)
    assert len({r.cache_keys["candidates"] for r in changed[:2]} | {first.cache_keys["candidates"]}) == 3
    again = mine_negatives(enc, tiny_examples(), CORPUS, IndexConfig(), loose, cache_root=tmp_path)
    assert again.counts["candidates_cached"] == 1 and again.negatives == first.negatives
    assert changed[0].negatives == first.negatives  # corpus order changes ids, not the negatives


def test_mine_end_to_end(tiny_model: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    """conf/mine.yaml composed as ``python -m trainer.mine`` would (in process: no second torch import)."""
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR
    from trainer.mining.config import register_mine_configs
    from trainer.mining.pipeline import run

    register_mine_configs()
    out = tmp_path / "mined"
    overrides = [f"model.name_or_path={tiny_model}", f"input_files=[{tiny_data['train']}]", f"out_dir={out}",
                 f"cache_dir={tmp_path / 'cache'}", "model.max_length_passage=32", "select.num_negatives=4",
                 "select.max_rank=20", "select.relative=0.99", "mine/teacher=mpnet",
                 f"teacher.name_or_path={tiny_model}", "teacher_filter.margin=0.0", "mine/index=hnsw",
                 f"teacher.cache_root={tmp_path / 'teacher-cache'}",
                 "drop_rows_without_negatives=true"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="mine", overrides=overrides)
    run(cfg)
    report = json.loads((out / "report.json").read_text())
    examples, _ = load_examples([str(out / "train.jsonl")])  # loads as training data
    source, _ = load_examples([str(tiny_data["train"])])
    dropped = report["counts"]["rows_dropped_without_negatives"]
    assert report["queries"] == len(source) and len(examples) == report["rows_written"] == len(source) - dropped
    assert dropped == report["counts"].get("queries_without_negatives", 0) and all(ex.neg for ex in examples)
    assert report["corpus"] == len({t for ex in source for t in ex.pos + ex.neg})
    assert sum(len(ex.neg) for ex in examples) == report["counts"]["selected"] > 0
    for ex in examples:
        assert ex.neg_scores is not None and len(ex.neg_scores) == len(ex.neg) and not set(ex.neg) & set(ex.pos)
        assert all(n < min(ex.pos_scores) for n in ex.neg_scores)  # teacher margin 0: strictly below
    assert 0 < report["removed"]["positive"] <= len(source)  # a random model does not always retrieve it
    assert set(report["cache_keys"]) >= {"corpus", "query", "teacher_query", "teacher_passage"}
    assert (out / "scores.png").stat().st_size > 1000
    assert report["settings"]["index"]["kind"] == "hnsw"


def _remine_rank(rank: int, store: str, model: str, data: str, out: str) -> None:
    from tests.test_encoding import init_two_ranks  # noqa: PLC0415
    from trainer.distributed import close_process_group

    init_two_ranks(rank, store)
    negatives = remine_once(Path(model), Path(data))
    Path(out, f"rank{rank}.json").write_text(json.dumps(negatives))
    close_process_group()


def remine_once(model: Path, data: Path) -> list[list[str]]:
    from trainer.data.dataset import ContrastiveDataset
    from trainer.mining.remine import Reminer

    examples, _ = load_examples([str(data)])
    dataset = ContrastiveDataset(examples, num_negatives=1)
    reminer = Reminer(dataset, SelectConfig(num_negatives=3, max_rank=20))
    before = [list(ex.neg) for ex in examples]
    record = reminer(Encoder.from_pretrained(str(model), EncoderSpec(max_length_passage=32)))
    corpus = set(reminer.corpus)
    assert record["remine_selected"] + 0 > 0 and len(reminer.corpus) == len(
        {t for ex in examples for t in ex.pos} | {t for n in before for t in n})  # frozen at the start
    for ex in examples:
        assert set(ex.neg) <= corpus and not set(ex.neg) & set(ex.pos)
    return [ex.neg for ex in examples]


def test_remine_two_processes_agree_with_one(tiny_model: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    single = remine_once(tiny_model, tiny_data["train"])
    torch.multiprocessing.start_processes(_remine_rank, nprocs=2, start_method="fork",
                                          args=(str(tmp_path / "store"), str(tiny_model), str(tiny_data["train"]),
                                                str(tmp_path)))
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == single


def test_train_remines_every_n_steps(compose: Any) -> None:
    from trainer.loop import train

    cfg = compose("data.num_negatives=1", "train.remine_every=2", "train.max_steps=5", "eval.tasks=[]",
                  "logger.every_n_steps=100")
    train(cfg)
    records = [json.loads(line) for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    remined = [r for r in records if "remine_selected" in r]
    assert [r["step"] for r in remined] == [2, 4] and all(r["remine_selected"] > 0 for r in remined)


@pytest.mark.parametrize("overrides", [["mine/index=ivf", "mine/teacher=cross_encoder", "teacher.name_or_path=x"],
                                       ["mine/index=hnsw", "mine/preset=st_compatible"], ["mine/teacher=mpnet"]])
def test_mine_configs_compose(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from trainer.config import CONF_DIR
    from trainer.mining.config import register_mine_configs

    register_mine_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="mine", overrides=overrides)
        with pytest.raises(Exception, match="selct"):
            compose(config_name="mine", overrides=["selct.margin=0.1"])  # a typo fails at compose time
    assert isinstance(OmegaConf.to_object(cfg.select), SelectConfig)
    index = next((o.split("=")[1] for o in overrides if o.startswith("mine/index=")), "flat")
    assert cfg.index.kind == index
    if "mine/preset=st_compatible" in overrides:
        assert (cfg.select.margin, cfg.select.relative, cfg.select.num_negatives) == (0.05, None, 5)
        assert cfg.precision == "float32"


def test_mining_and_training_share_one_teacher_config() -> None:
    """mine/teacher=mpnet composes the training teacher (conf/teacher/mpnet.yaml): same node, same embedding cache;
    a key the teacher kind does not have fails at compose time (the old filter config ignored nothing and knew only
    three kinds)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from trainer.config import CONF_DIR, register_configs
    from trainer.mining.config import register_mine_configs

    register_configs()
    register_mine_configs()
    shared = ["model.max_length_query=32", "model.max_length_passage=128"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        mine = compose(config_name="mine", overrides=["mine/teacher=mpnet", *shared])
        plain = compose(config_name="mine", overrides=["teacher=mpnet", *shared])
        train = compose(config_name="train", overrides=["teacher=mpnet", *shared])
        with pytest.raises(Exception, match="max_lenght_passage"):
            compose(config_name="mine", overrides=["mine/teacher=mpnet", "teacher.max_lenght_passage=64"])
        none = compose(config_name="mine")
        precomputed = compose(config_name="mine", overrides=["teacher=precomputed"])
    from trainer.mining.teacher import build_teacher

    with pytest.raises(ValueError, match="precomputed cannot filter"):  # refused before any encoding
        build_teacher(precomputed.teacher)
    as_dict = [OmegaConf.to_container(c.teacher, resolve=True) for c in (mine, plain, train)]
    assert as_dict[0] == as_dict[1] == as_dict[2]
    assert as_dict[0]["_target_"] == "trainer.teachers.BiEncoderTeacher" and as_dict[0]["max_length_passage"] == 128
    assert (mine.teacher_filter.margin, plain.teacher_filter.margin) == (0.05, 0.05) and none.teacher is None

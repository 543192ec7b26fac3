"""Mining on real-world data: rows that share a query text, an output folder that holds the input, bad input.

    pytest -q tests/test_mining_safety.py
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from conftest import make_rows, write_jsonl
from trainer.data.schema import Example
from trainer.mining.config import IndexConfig, SelectConfig, TeacherFilterConfig
from trainer.mining.pipeline import mine_negatives, output_rows
from trainer.models.encoder import Encoder, EncoderSpec

pytestmark = pytest.mark.usefixtures("one_thread")

# One row per (query, positive) pair, as most public datasets are: "what is x" has two positives.
SHARED = [Example("what is x", ["x is A"]), Example("what is x", ["x is B"]), Example("what is y", ["y is C"])]
FILLER = [f"w{i} w{i + 1} the news" for i in range(12)]
CORPUS = ["x is A", "x is B", "y is C"] + FILLER
EVERYTHING = SelectConfig(num_negatives=len(CORPUS), relative=None, max_rank=len(CORPUS))  # every candidate


def assert_no_sibling_positive(negatives: Sequence[Sequence[str]]) -> None:
    assert "x is B" not in negatives[0] and "x is A" not in negatives[1]
    assert "x is A" in negatives[2] and "x is B" in negatives[2]  # another query's positives stay negatives


class TableTeacher:
    """Scores by passage: "x is B" below "x is A", so only the selection rules can keep it from the first row."""

    TABLE = {"x is A": 0.5, "x is B": 0.4, "y is C": 1.0}

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        return np.array([self.TABLE.get(p, 0.0) for p in passages], dtype=np.float32)


def test_rows_sharing_a_query_text_never_mine_each_others_positives(tiny_model: Path, tmp_path: Path) -> None:
    encoder = Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_passage=32))
    plain = mine_negatives(encoder, SHARED, CORPUS, IndexConfig(), EVERYTHING)
    assert_no_sibling_positive(plain.negatives)
    assert plain.counts["positive"] == 2 + 2 + 1  # each "what is x" row excludes both of the text's positives
    stored = [mine_negatives(encoder, SHARED, CORPUS, IndexConfig(), EVERYTHING, cache_root=tmp_path)
              for _ in range(2)]
    assert stored[1].counts["candidates_cached"] == 1  # the second selection ran on the stored search result
    for res in stored:
        assert res.negatives == plain.negatives
    taught = mine_negatives(encoder, SHARED, CORPUS, IndexConfig(), EVERYTHING, teacher=TableTeacher(),
                            teacher_cfg=TeacherFilterConfig(margin=0.0))
    assert_no_sibling_positive(taught.negatives)
    assert taught.counts["teacher"] == 2  # "y is C" (1.0) for both "what is x" rows, nothing else
    assert taught.teacher_pos == [[0.5], [pytest.approx(0.4)], [1.0]]


def test_kept_negatives_that_are_a_sibling_rows_positive_are_dropped(tiny_model: Path) -> None:
    encoder = Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_passage=32))
    rows_in = [Example("what is x", ["x is A"], ["w1 w2 the news"]), Example("what is x", ["x is B"], ["x is A"]),
               Example("what is y", ["y is C"], ["x is A"])]
    res = mine_negatives(encoder, rows_in, CORPUS, IndexConfig(), EVERYTHING)
    rows = output_rows(rows_in, res, keep_existing=True)
    assert_no_sibling_positive([r["neg"] for r in rows])
    assert rows[0]["neg"][0] == "w1 w2 the news" and rows[2]["neg"][0] == "x is A"  # other rows keep theirs
    assert res.counts["existing_negatives_positive_elsewhere"] == 1


def test_query_positives_mask_equals_a_plain_loop() -> None:
    from trainer.mining.select import QueryPositives, positive_matrix

    rng = np.random.default_rng(3)
    group = rng.integers(0, 35, size=60)  # 60 rows over up to 35 query texts: shared and single ones
    own = [set(rng.integers(0, 50, size=int(rng.integers(1, 4))).tolist()) for _ in range(60)]
    pair_group = np.concatenate([[group[q]] * len(p) for q, p in enumerate(own)])
    ids = np.concatenate([sorted(p) for p in own])
    own = positive_matrix(own)  # (60, 3)
    positives = QueryPositives(own, group, pair_group, ids)
    cand = rng.integers(-1, 50, size=(60, 20))
    union = {g: set(ids[pair_group == g].tolist()) for g in set(group.tolist())}
    want = np.array([[int(t) in union[group[q]] for t in cand[q]] for q in range(60)])
    np.testing.assert_array_equal(positives.mask(cand), want)
    assert positives.widest() == max(len(u) for u in union.values())


def compose_mine(tiny_model: Path, *overrides: str) -> Any:
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR
    from trainer.mining.config import register_mine_configs

    register_mine_configs()
    base = [f"model.name_or_path={tiny_model}", "model.max_length_passage=32", "cache_dir=null", "histogram=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="mine", overrides=base + list(overrides))


def test_mining_refuses_to_write_over_its_input(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.mining.pipeline import run

    data = write_jsonl(tmp_path / "data" / "train.jsonl", make_rows(20, negatives=2))
    corpus = write_jsonl(tmp_path / "corpus" / "report.json", [{"id": i, "text": f"w{i} w{i + 1}"} for i in range(9)])
    before = {p: p.read_bytes() for p in (data, corpus)}
    for overrides, named in [([f"input_files=[{data}]", f"out_dir={data.parent}"], data),
                             ([f"input_files=[{data}]", f"out_dir={tmp_path / 'data' / '.' }"], data),
                             ([f"input_files=[{data}]", f"corpus_file={corpus}", f"out_dir={corpus.parent}"], corpus)]:
        with pytest.raises(ValueError, match=rf"{named}.*input.*out_dir"):
            run(compose_mine(tiny_model, *overrides))
    assert {p: p.read_bytes() for p in before} == before  # untouched
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["train.jsonl"]


def test_mining_fails_when_no_row_would_be_written(tiny_model: Path, tmp_path: Path) -> None:
    from trainer.mining.pipeline import run

    data = write_jsonl(tmp_path / "train.jsonl", make_rows(20))
    cfg = compose_mine(tiny_model, f"input_files=[{data}]", f"out_dir={tmp_path / 'mined'}", "select.max_score=-2",
                       "drop_rows_without_negatives=true")  # nothing scores below -2: every row is dropped
    with pytest.raises(ValueError, match=r"mined/train.jsonl: no rows to write: all 20 rows were dropped"):
        run(cfg)
    assert not (tmp_path / "mined" / "train.jsonl").exists()

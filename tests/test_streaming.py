"""data.streaming=true: a seeded buffer shuffle with bounded look-ahead, each row once per epoch, every process its
slice, an exact resume position, and refusals for what needs the whole data in memory."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from conftest import make_rows, write_jsonl
from trainer.data.schema import Example
from trainer.data.sources import SourceOptions
from trainer.data.stream import StreamingData, buffer_shuffle


def stream(path: Path, **kwargs: Any) -> StreamingData:
    settings = dict(caps=[None], max_rows=None, num_negatives=0, seed=3, batch_size=4, world_size=1, rank=0,
                    buffer_size=8)
    settings.update(kwargs)
    return StreamingData([str(path)], SourceOptions(), **settings)


def test_buffer_shuffle_is_a_seeded_permutation_that_reads_at_most_a_buffer_ahead() -> None:
    read = []

    def rows() -> Iterator[Example]:
        for i in range(40):
            read.append(i)
            yield Example(query=f"q{i}", pos=[f"p{i}"])

    out = []
    for row in buffer_shuffle(rows(), 8, np.random.default_rng(0)):
        out.append(int(row.query[1:]))
        assert len(read) <= len(out) + 8  # never more than the buffer read ahead of what was emitted
    assert sorted(out) == list(range(40)) and out != list(range(40))
    again = [int(r.query[1:]) for r in buffer_shuffle((Example(query=f"q{i}", pos=["p"]) for i in range(40)), 8,
                                                      np.random.default_rng(0))]
    assert again == out


def test_each_row_once_per_epoch_split_over_processes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", make_rows(50, seed=1, negatives=2))
    ranks = [stream(path, world_size=2, rank=r, num_negatives=1) for r in (0, 1)]
    assert ranks[0].num_batches(0) == 6 and ranks[0].dropped_in(0) == 2  # 50 rows, global batch 8
    epochs = []
    for epoch in (0, 1):
        for data in ranks:
            data.set_epoch(epoch)
        batches = [a + b for a, b in zip(*ranks)]
        assert all(len(a) == 4 for data in ranks for a in data)
        queries = [s.query for batch in batches for s in batch]
        assert len(queries) == 48 and len(set(queries)) == 48  # each row at most once, 2 left out
        assert all(len(s.passages) == 2 for batch in batches for s in batch)
        epochs.append(queries)
    assert epochs[0] != epochs[1]  # every epoch its own order
    ranks[0].set_epoch(0)
    assert [s.query for batch in ranks[0] for s in batch] == [q for i, q in enumerate(epochs[0]) if i % 8 < 4]


def test_resume_position_skips_exactly_the_batches_trained_on(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", make_rows(50, seed=1, negatives=3))
    data = stream(path, num_negatives=2)
    data.set_epoch(1)
    whole = [[(s.index, s.query, s.passages) for s in batch] for batch in data]
    data.set_epoch(1, start_batch=5)
    assert [[(s.index, s.query, s.passages) for s in batch] for batch in data] == whole[5:]


def test_streaming_training_resumes_exactly(compose: Any, tmp_path: Path) -> None:
    from trainer.loop import train

    path = write_jsonl(tmp_path / "rows.jsonl", make_rows(90, seed=5, negatives=2))
    recipe = [f"data.train_files=[{path}]", "data.streaming=true", "data.shuffle_buffer=16", "data.num_negatives=1",
              "train.epochs=2", "logger.every_n_steps=1", "eval.tasks=[]", "train.save_every_n_steps=4",
              "train.keep_last=0"]
    train(compose(*recipe, "name=reference"))
    runs = tmp_path / "runs"
    want = [json.loads(line) for line in (runs / "reference" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in want] == list(range(1, 23))  # 90 // 8 = 11 batches per epoch, 2 epochs
    train(compose(*recipe, "name=victim", "train.stop_after_steps=8"))  # stops inside epoch 0
    train(compose(*recipe, "name=victim", "resume=auto"))
    got = [json.loads(line) for line in (runs / "victim" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got] == list(range(1, 23))
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], abs=1e-6)


@pytest.mark.parametrize("override,setting", [("teacher=mpnet", "teacher"),
                                              ("data.task_homogeneous=true", "data.task_homogeneous"),
                                              ("data.source_weights=[1]", "data.source_weights"),
                                              ("train.remine_every=2", "train.remine_every")])
def test_streaming_refuses_what_needs_the_whole_data(compose: Any, override: str, setting: str) -> None:
    from trainer.loop import train

    with pytest.raises(ValueError, match=f"data.streaming.*{setting}|{setting}.*data.streaming"):
        train(compose("data.streaming=true", override, "eval.tasks=[]"))


def test_a_row_without_the_negatives_asked_for_is_named(tmp_path: Path) -> None:
    rows = make_rows(6, seed=1, negatives=1)
    rows[3]["neg"] = []
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(ValueError, match=r"rows.jsonl.*row 4.*negatives"):
        stream(path, num_negatives=1)


def test_a_text_label_table_is_refused_by_name(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "labels.jsonl", make_rows(2, seed=1) + [{"text": "good", "label": "pos"}])
    with pytest.raises(ValueError, match=r"labels.jsonl: row 3: a \(text, label\) table row.*data.streaming=false"):
        stream(path)


def test_rows_per_source_are_capped_in_order(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", make_rows(10, seed=1))
    b = write_jsonl(tmp_path / "b.jsonl", make_rows(10, seed=2))
    data = StreamingData([str(a), str(b)], SourceOptions(), caps=[3, None], max_rows=9, num_negatives=0, seed=0,
                         batch_size=3, world_size=1, rank=0, buffer_size=4)
    assert data.rows == 9
    sources = Counter(s.query in {r["query"] for r in make_rows(10, seed=1)} for batch in data for s in batch)
    assert sources == {True: 3, False: 6}

"""Row validation (each malformed kind gets its error), skip mode, deterministic draws, duplicate-free batches."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from conftest import make_rows, write_jsonl
from trainer.data.dataset import ContrastiveDataset, UniqueBatchSampler, load_examples
from trainer.data.schema import DataError, Example, LoadReport, iter_jsonl

GOOD = {"query": "q", "pos": ["p"], "neg": ["n"]}
BAD_ROWS = [
    ({"pos": ["p"]}, "query: missing"),
    ({"query": "", "pos": ["p"]}, "query: empty string"),
    ({"query": 3, "pos": ["p"]}, "query: must be a string"),
    ({"query": "q"}, "pos: missing"),
    ({"query": "q", "pos": []}, "pos: empty list"),
    ({"query": "q", "pos": "p"}, "pos: must be a list"),
    ({"query": "q", "pos": ["p", 4]}, "pos[1]: must be a string"),
    ({"query": "q", "pos": ["p", " "]}, "pos[1]: empty string"),
    ({"query": "q", "pos": ["p"], "neg": ["p"]}, "neg: a negative equals a positive"),
    ({"query": "q", "pos": ["p"], "pos_scores": [1.0, 2.0]}, "pos_scores: must be a list of 1 numbers"),
    ({"query": "q", "pos": ["p"], "pos_scores": ["x"]}, "pos_scores[0]: must be a finite number"),
    ({"query": "q", "pos": ["p"], "neg": ["n"], "neg_scores": [float("nan")]}, "neg_scores[0]: must be a finite"),
    ({"query": "q", "pos": ["p"], "task": 1}, "task: must be a string"),
    ([1, 2], "row: must be a JSON object"),
]


@pytest.mark.parametrize("row,message", BAD_ROWS)
def test_each_malformed_row_names_file_line_and_field(tmp_path: Path, row: object, message: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, row])
    with pytest.raises(DataError) as err:
        list(iter_jsonl(path))
    assert str(err.value).startswith(f"{path}:3: {message}"), str(err.value)


def test_an_unknown_field_is_ignored_counted_and_reported_once(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {"query": "q2", "pos": ["p"], "negs": ["x"]},
                                              {"query": "q3", "pos": ["p"], "negs": ["y"]}])
    report = LoadReport()
    examples = list(iter_jsonl(path, report=report))
    assert [e.neg for e in examples] == [["n"], [], []] and report.rows == 3
    assert report.ignored == Counter({"negs": 2})
    assert f"unknown fields ignored: negs (2 rows, first at {path}:2)" in report.summary()


def test_invalid_json_and_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n{\"query\": \"q\", \n")
    with pytest.raises(DataError, match=rf"^{path}:2: row: invalid JSON"):
        list(iter_jsonl(path))
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"query": "caf\xe9", "pos": ["p"]}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: row: not valid UTF-8 \(byte 0xe9 at column 15\)"):
        list(iter_jsonl(path))


def test_skip_mode_counts_every_bad_row(tmp_path: Path) -> None:
    rows = [GOOD] + [r for r, _ in BAD_ROWS] + [GOOD]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    report = LoadReport()
    examples = list(iter_jsonl(path, on_error="skip", report=report))
    assert len(examples) == 2 and report.rows == 2
    assert sum(report.skipped.values()) == len(BAD_ROWS)
    assert report.skipped["query"] == 3 and report.skipped["pos"] == 5
    assert "skipped" in report.summary()


def test_missing_file_and_empty_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_examples([str(tmp_path / "nope.jsonl")])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no usable training rows"):
        load_examples([str(tmp_path / "empty.jsonl")])


def test_hf_datasets_json_and_parquet(tmp_path: Path) -> None:
    rows = make_rows(10, negatives=2)
    path = write_jsonl(tmp_path / "d.json", rows)
    examples, _ = load_examples([str(path)], fmt="hf")
    assert [e.query for e in examples] == [r["query"] for r in rows]
    import datasets

    parquet = tmp_path / "d.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(parquet))
    streamed, _ = load_examples([str(parquet)], fmt="hf", streaming=True)
    assert [e.pos for e in streamed] == [r["pos"] for r in rows]
    bad = write_jsonl(tmp_path / "bad.json", rows[:3] + [{"query": "", "pos": ["x"], "neg": []}])
    with pytest.raises(DataError, match=r"bad.json:4: query: empty string"):
        load_examples([str(bad)], fmt="hf")


def test_draws_are_deterministic_per_seed_epoch_index() -> None:
    examples = [Example(query=f"q{i}", pos=[f"p{i}a", f"p{i}b"], neg=[f"n{i}{j}" for j in range(6)]) for i in range(20)]
    a = ContrastiveDataset(examples, num_negatives=3, seed=5)
    b = ContrastiveDataset(examples, num_negatives=3, seed=5)
    assert [a.draw(i, 0) for i in range(20)] == [b.draw(i, 0) for i in range(20)]
    assert [a.draw(i, 0) for i in range(20)] != [a.draw(i, 1) for i in range(20)]
    for i in range(20):
        _, negs = a.draw(i, 0)
        assert len(set(negs)) == 3  # enough negatives: drawn without replacement
    a.set_epoch(1)
    sample = a[4]
    pos, negs = a.draw(4, 1)
    assert sample.passages == [examples[4].pos[pos]] + [examples[4].neg[n] for n in negs]


def test_rows_without_negatives_are_refused_when_negatives_are_asked_for() -> None:
    with pytest.raises(ValueError, match="num_negatives=2 but 1 rows have no negatives"):
        ContrastiveDataset([Example(query="q", pos=["p"], neg=[])], num_negatives=2)


def test_batches_never_hold_a_text_twice_across_ranks() -> None:
    # Many examples share passages: shared positives and negatives must never meet in one global batch.
    shared = [f"s{j}" for j in range(6)]
    examples = [Example(query=f"q{i}", pos=[f"p{i}", shared[i % 6]] if i % 3 == 0 else [f"p{i}"],
                        neg=[shared[(i + 1) % 6], f"n{i}"]) for i in range(120)]
    dataset = ContrastiveDataset(examples, num_negatives=1, seed=0)
    world = 2
    samplers = [UniqueBatchSampler(dataset, batch_size=4, seed=3, world_size=world, rank=r) for r in range(world)]
    for epoch in range(3):
        for s in samplers:
            s.set_epoch(epoch)
        per_rank = [list(iter(s)) for s in samplers]
        assert len(per_rank[0]) == len(per_rank[1]) > 0
        seen_examples: Counter = Counter()
        for parts in zip(*per_rank):
            global_batch = [i for part in parts for i in part]
            assert len(global_batch) == 8
            texts = Counter(t for i in global_batch for t in dataset.batch_keys(i, epoch))
            assert max(texts.values()) == 1
            seen_examples.update(global_batch)
        assert max(seen_examples.values()) == 1  # no example twice in an epoch


def test_task_homogeneous_batches_and_resume_offset() -> None:
    examples = [Example(query=f"q{i}", pos=[f"p{i}"], task="a" if i % 2 else "b") for i in range(40)]
    dataset = ContrastiveDataset(examples)
    sampler = UniqueBatchSampler(dataset, batch_size=4, seed=1, task_homogeneous=True)
    sampler.set_epoch(0)
    batches = list(iter(sampler))
    assert len(batches) == 10
    for batch in batches:
        assert len({examples[i].task for i in batch}) == 1
    assert {examples[b[0]].task for b in batches} == {"a", "b"}
    sampler.set_epoch(0, start_batch=7)
    assert list(iter(sampler)) == batches[7:]


def test_dropped_count_is_every_row_left_out_of_the_epoch() -> None:
    pool = [f"shared {j}" for j in range(12)]
    examples = [Example(query=f"q{i}", pos=[f"p{i}"], neg=[pool[(i * 5 + j) % 12] for j in range(4)])
                for i in range(64)]
    dataset = ContrastiveDataset(examples, num_negatives=1, seed=1)
    for open_batches in (8, 1):
        sampler = UniqueBatchSampler(dataset, batch_size=8, seed=1, open_batches=open_batches)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            seen = {i for batch in sampler for i in batch}
            assert sampler.dropped == 64 - len(seen), (open_batches, epoch)
    sampler = UniqueBatchSampler(dataset, batch_size=8, seed=1)
    assert [sampler.num_batches(epoch) for epoch in range(3)] == [7, 6, 7]  # epochs differ in length


def test_lone_surrogates_are_rejected_at_load(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"query": "q", "pos": ["ok \\ud800 there"]}\n'
                    + '{"query": "\\udfff", "pos": ["p"]}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: pos\[0\]: lone surrogate '\\ud800' at position 3"):
        list(iter_jsonl(path))
    report = LoadReport()
    assert len(list(iter_jsonl(path, on_error="skip", report=report))) == 1
    assert report.skipped == Counter({"pos": 1, "query": 1})


def test_a_directory_as_training_file_and_a_cut_off_line_name_what_is_wrong(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "folder" / "train.jsonl", [GOOD])
    with pytest.raises(IsADirectoryError, match=r"folder: a directory, not a JSONL file.*it holds train.jsonl"):
        load_examples([str(tmp_path / "folder")])
    path = tmp_path / "cut.jsonl"
    path.write_text(json.dumps(GOOD) + '\n{"query": "q", "pos": ["p"\n')
    with pytest.raises(DataError, match=rf"^{path}:2: row: invalid JSON: .* at column 27$"):
        list(iter_jsonl(path))


def test_a_task_without_negatives_trains_in_batch_beside_mined_tasks_in_task_homogeneous_batches() -> None:
    # Mined retrieval pairs (3 negatives each) beside a label task that has none: its batches get 1 passage per query.
    mined = [Example(query=f"q{i}", pos=[f"p{i}"], neg=[f"n{i}-{j}" for j in range(5)], task="news") for i in range(8)]
    label = [Example(query=f"r{i}", pos=[f"s{i}"], task="sentiment", label=str(i % 2)) for i in range(8)]
    dataset = ContrastiveDataset(mined + label, num_negatives=3, seed=0, task_homogeneous=True)
    assert [len(dataset[i].passages) for i in range(16)] == [4] * 8 + [1] * 8
    sampler = UniqueBatchSampler(dataset, batch_size=4, seed=0, task_homogeneous=True)
    for batch in sampler:
        assert len({len(dataset[i].passages) for i in batch}) == 1  # one shape per batch: the loss reads 1 + k from it
    with pytest.raises(ValueError, match="8 rows have no negatives.*task_homogeneous=true"):
        ContrastiveDataset(mined + label, num_negatives=3)  # mixed batches would mix shapes
    half = mined + [Example(query="q-extra", pos=["p-extra"], task="news")]
    with pytest.raises(ValueError, match="1 rows of task 'news', whose other rows have negatives"):
        ContrastiveDataset(half, num_negatives=3, task_homogeneous=True)


def test_mined_and_label_tasks_train_together_through_the_loop(compose, tmp_path: Path) -> None:
    from conftest import build_tiny_model
    from trainer.loop import train

    teacher = build_tiny_model(tmp_path / "teacher", hidden=48, layers=2, seed=7)
    mined = write_jsonl(tmp_path / "mined.jsonl", make_rows(48, seed=3, negatives=3, task="news"))
    labels = [{**row, "label": str(i % 3)} for i, row in enumerate(make_rows(48, seed=4, task="topic"))]
    topic = write_jsonl(tmp_path / "topic.jsonl", labels)
    cfg = compose(f"data.train_files=[{mined},{topic}]", "data.num_negatives=2", "data.task_homogeneous=true",
                  "train.batch_size=8", "train.max_steps=8", "logger.every_n_steps=1", "eval.tasks=[]",
                  "teacher=mpnet", f"teacher.name_or_path={teacher}", "distill=kl", "name=mixed")
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "runs" / "mixed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9)) and all(math.isfinite(r["loss"]) for r in rows)
    assert all(math.isfinite(r["kl"]) for r in rows)  # the teacher scores both batch shapes

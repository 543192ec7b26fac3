"""Data as people have it: each sample format loads into the expected rows, unknown fields are counted (not fatal),
FlagEmbedding's prompt is the instruction, ``data.columns`` maps anything else, bad table rows name file, row and
column, mixtures report each source's rows, and a ``save_to_disk`` folder trains end to end.

    pytest -q tests/test_data_sources.py
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, make_rows, write_jsonl
from trainer.data.dataset import load_examples
from trainer.data.schema import DataError, Example
from trainer.data.sources import SourceOptions, resolve

SAMPLES = ROOT / "data" / "samples"
RICE_Q = "how do I cook rice on the stove"
RICE_POS = ("Rinse the rice, simmer it covered in one and a half times its volume of water for about fifteen "
            "minutes, then let it stand off the heat.")
RICE_NEG = "Knead bread dough for ten minutes until smooth."
VENV_Q = "why use a virtual environment in Python"
VENV_POS = ("A virtual environment keeps each project's installed packages separate, so projects needing different "
            "versions do not clash.")
VENV_NEG = "pip freeze lists installed packages."
PROMPT = "Represent this question for searching relevant passages: "


def load(*files: Path | str, **kwargs: object) -> tuple[list[Example], object]:
    return load_examples([str(f) for f in files], "auto", **kwargs)  # type: ignore[arg-type]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header] + rows)
    return path


def test_our_jsonl_sample_is_read_by_auto_as_before() -> None:
    examples, report = load(SAMPLES / "toy.jsonl")
    assert len(examples) == 12 and not report.ignored
    assert examples[0].query == "how long should I rest a steak after grilling"
    assert examples[0].neg == ["Bring a large pot of salted water to a rolling boil before adding dried pasta."]
    assert resolve(str(SAMPLES / "toy.jsonl"), "auto") == [("jsonl", str(SAMPLES / "toy.jsonl"))]


def test_sentence_transformers_triplets_csv() -> None:
    examples, report = load(SAMPLES / "st_triplets.csv")
    assert len(examples) == 16 and not report.ignored
    assert examples[0] == Example(query=RICE_Q, pos=[RICE_POS], neg=[RICE_NEG])
    assert examples[-1] == Example(query=VENV_Q, pos=[VENV_POS], neg=[VENV_NEG])


def test_sentence_transformers_pairs_parquet() -> None:
    examples, _ = load(SAMPLES / "st_pairs.parquet")
    assert len(examples) == 16
    assert examples[0] == Example(query=RICE_Q, pos=[RICE_POS], neg=[])


def test_flag_embedding_prompt_is_the_instruction_and_type_is_counted() -> None:
    examples, report = load(SAMPLES / "flag.jsonl")
    assert len(examples) == 16
    assert examples[0] == Example(query=RICE_Q, pos=[RICE_POS], neg=[RICE_NEG], instruction=PROMPT,
                                  pos_scores=[0.9], neg_scores=[0.2])
    assert report.ignored == Counter({"type": 16})
    assert f"unknown fields ignored: type (16 rows, first at {SAMPLES / 'flag.jsonl'}:1)" in report.summary()


def test_an_explicit_instruction_wins_over_prompt(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "f.jsonl", [{"query": "q", "pos": ["p"], "prompt": "P: ", "instruction": "I"}])
    examples, report = load(path)
    assert examples[0].instruction == "I" and not report.ignored


def test_save_to_disk_sample_folder() -> None:
    assert resolve(str(SAMPLES / "saved"), "auto") == [("disk", str(SAMPLES / "saved"))]
    examples, _ = load(SAMPLES / "saved")
    assert len(examples) == 16
    assert examples[0] == Example(query=RICE_Q, pos=[RICE_POS], neg=[RICE_NEG], task="cooking")
    assert examples[-1].task == "programming"


def test_custom_columns_are_mapped() -> None:
    columns = {"question": "query", "answer": "pos", "topic": "task"}
    examples, report = load(SAMPLES / "custom_columns.json", columns=columns)
    assert len(examples) == 16
    assert examples[0] == Example(query=RICE_Q, pos=[RICE_POS], neg=[], task="cooking")  # a string -> [string]
    assert report.ignored == Counter({"id": 16})
    with pytest.raises(DataError, match=r"custom_columns.json:1: row: no known format \(columns id, question, "
                                        r"answer, topic\).*data.columns"):
        load(SAMPLES / "custom_columns.json")


def test_several_columns_gather_into_one_list_and_a_bad_target_fails_first(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["q", "a", "wrong1", "wrong2"], [["q1", "a1", "x1", "y1"]])
    examples, _ = load(path, columns={"q": "query", "a": "pos", "wrong1": "neg", "wrong2": "neg"})
    assert examples == [Example(query="q1", pos=["a1"], neg=["x1", "y1"])]
    with pytest.raises(ValueError, match="data.columns: q -> question: not a schema field"):
        load(path, columns={"q": "question"})


def test_a_malformed_csv_row_names_file_row_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "st.csv", ["anchor", "positive", "negative"],
                     [["a1", "p1", "n1"], ["a2", "p2", "n2"], ["", "p3", "n3"]])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:row 3: anchor: missing \(query in the "
                                        r"training schema\)"):
        load(path)
    examples, report = load_examples([str(path)], "auto", on_error="skip")
    assert len(examples) == 2 and report.skipped == Counter({"anchor": 1})


def test_a_malformed_parquet_row_names_file_row_and_column(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "pairs.parquet"
    datasets.Dataset.from_list([{"anchor": "a1", "positive": "p1"}, {"anchor": "a2", "positive": " "}]).to_parquet(
        str(path))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:row 2: positive: empty string"):
        load(path)


def test_graded_pairs_are_refused_with_the_columns_seen(tmp_path: Path) -> None:
    sts = write_csv(tmp_path / "sts.csv", ["sentence1", "sentence2", "score"], [["a", "b", "0.5"]])
    with pytest.raises(DataError, match=r"sts.csv:row 1: score: a graded pair \(columns sentence1, sentence2, "
                                        r"score\)"):
        load(sts)
    pairs = write_csv(tmp_path / "pairs.csv", ["sentence1", "sentence2"], [["a", "b"]])
    assert load(pairs)[0] == [Example(query="a", pos=["b"])]


def test_a_text_label_table_is_a_label_task_named_after_its_file(tmp_path: Path) -> None:
    # Label "pos": a, b, c, d, e, f (six texts: four positives each, the next ones cyclically); "neg": x, y;
    # "odd": one text, nothing to pair it with; "dup": the same text twice, nothing either.
    table = [["a", "pos"], ["x", "neg"], ["b", "pos"], ["c", "pos"], ["lonely", "odd"], ["d", "pos"], ["y", "neg"],
             ["e", "pos"], ["f", "pos"], ["same", "dup"], ["same", "dup"]]
    examples, report = load(write_csv(tmp_path / "reviews.v2.csv", ["text", "label"], table))
    assert [(e.query, e.pos) for e in examples] == [
        ("a", ["b", "c", "d", "e"]), ("x", ["y"]), ("b", ["c", "d", "e", "f"]), ("c", ["d", "e", "f", "a"]),
        ("d", ["e", "f", "a", "b"]), ("y", ["x"]), ("e", ["f", "a", "b", "c"]), ("f", ["a", "b", "c", "d"])]
    assert {(e.task, e.label) for e in examples} == {("reviews", "pos"), ("reviews", "neg")}
    assert "label tables (reviews): 8 rows paired" in report.summary()
    assert "3 left out with no other text of their label (first: 'odd')" in report.summary()

    # Integer labels (a parquet column) and any text column name; a table beside pair rows keeps them as they are.
    import datasets

    parquet = tmp_path / "tweets.parquet"
    datasets.Dataset.from_list([{"sentence": "t1", "label": 3}, {"sentence": "t2", "label": 3}]).to_parquet(
        str(parquet))
    mixed, _ = load(SAMPLES / "toy.jsonl", parquet)
    assert len(mixed) == 14 and mixed[0].query == "how long should I rest a steak after grilling"
    assert [(e.query, e.pos, e.task, e.label) for e in mixed[12:]] == [("t1", ["t2"], "tweets", "3"),
                                                                        ("t2", ["t1"], "tweets", "3")]


def test_a_text_label_table_row_without_its_label_is_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "labels.csv", ["text", "label"], [["good film", "pos"], ["dull", ""]])
    with pytest.raises(DataError, match=r"labels.csv:row 2: label: empty: a \(text, label\) table row needs"):
        load(path)
    jsonl = write_jsonl(tmp_path / "labels.jsonl", [{"text": "good", "label": "pos"}, {"text": "", "label": "pos"}])
    with pytest.raises(DataError, match=r"labels.jsonl:2: text: empty string \(query in the training schema\)"):
        load(jsonl)


def test_a_folder_of_files_reads_each_and_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    write_csv(folder / "a.csv", ["anchor", "positive"], [["a1", "p1"]])
    write_csv(folder / "b.csv", ["anchor", "positive"], [["b1", "p1 b"], ["b2", ""]])
    with pytest.raises(DataError, match=rf"^{re.escape(str(folder / 'b.csv'))}:row 2: positive: missing"):
        load(folder)
    write_csv(folder / "b.csv", ["anchor", "positive"], [["b1", "p1 b"]])
    assert [e.query for e in load(folder)[0]] == ["a1", "b1"]
    write_jsonl(folder / "c.jsonl", [{"query": "c", "pos": ["p"]}])
    with pytest.raises(ValueError, match="a folder of mixed data files"):
        load(folder)


def test_a_dataset_dict_folder_reads_data_hf_split(tmp_path: Path) -> None:
    import datasets

    rows = make_rows(4)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:3]),
                          "dev": datasets.Dataset.from_list(rows[3:])}).save_to_disk(str(tmp_path / "dd"))
    assert [e.query for e in load(tmp_path / "dd")[0]] == [r["query"] for r in rows[:3]]
    assert [e.query for e in load(tmp_path / "dd", hf_split="dev")[0]] == [rows[3]["query"]]
    with pytest.raises(ValueError, match=r"no split 'test' \(it has train, dev\): set data.hf_split"):
        load(tmp_path / "dd", hf_split="test")


def test_the_hub_code_path_on_a_local_folder_and_an_unreachable_id(tmp_path: Path) -> None:
    from trainer.data.sources.hf import load_hub

    folder = tmp_path / "hub_like" / "data"
    folder.mkdir(parents=True)
    write_csv(folder / "train.csv", ["anchor", "positive"], [["a1", "p1"], ["a2", "p2"]])
    ds = load_hub(str(folder.parent), SourceOptions(hf_split="train"))
    assert [r["anchor"] for r in ds] == ["a1", "a2"]
    assert resolve("someone/some-data", "auto") == [("hub", "someone/some-data")]
    with pytest.raises(FileNotFoundError, match=r"someone/some-data: not a local file or folder, and loading it "
                                                r"as a Hugging Face Hub dataset \(config None, split train"):
        load("someone/some-data")
    with pytest.raises(FileNotFoundError, match="missing.csv: training file not found"):
        load(tmp_path / "missing.csv")


def test_a_mixture_takes_per_source_rows_and_reports_them() -> None:
    examples, report = load(SAMPLES / "toy.jsonl", SAMPLES / "saved", SAMPLES / "st_triplets.csv",
                            source_rows=[5, None, 3])
    assert len(examples) == 5 + 16 + 3
    assert examples[5].task == "cooking" and examples[-1].query == "how to soften hard brown sugar"
    assert report.sources == [(str(SAMPLES / "toy.jsonl"), 5), (str(SAMPLES / "saved"), 16),
                              (str(SAMPLES / "st_triplets.csv"), 3)]
    assert f"per source: {SAMPLES / 'toy.jsonl'} 5, {SAMPLES / 'saved'} 16, {SAMPLES / 'st_triplets.csv'} 3" \
        in report.summary()
    _, capped = load(SAMPLES / "toy.jsonl", SAMPLES / "saved", source_rows=[5, None], max_rows_per_file=4)
    assert [rows for _, rows in capped.sources] == [4, 4]  # the smaller cap wins
    with pytest.raises(ValueError, match="data.source_rows has 1 entries for 2 data.train_files"):
        load(SAMPLES / "toy.jsonl", SAMPLES / "saved", source_rows=[5])


@pytest.mark.usefixtures("one_thread")
def test_training_runs_on_a_save_to_disk_folder(compose, tmp_path: Path) -> None:
    import datasets

    from trainer.loop import train

    folder = tmp_path / "saved"
    datasets.Dataset.from_list(make_rows(32, seed=3)).save_to_disk(str(folder))
    cfg = compose(f"data.train_files=[{folder}]", "train.max_steps=2", "eval.tasks=[]")
    assert cfg.data.format == "auto"
    train(cfg)
    steps = [line for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines() if '"step"' in line]
    assert steps


@pytest.mark.usefixtures("one_thread")
def test_training_runs_on_the_text_label_sample(compose) -> None:
    from trainer.loop import train

    examples, report = load(SAMPLES / "st_text_label.csv")
    assert len(examples) == 16 and {e.task for e in examples} == {"st_text_label"}
    assert {e.label for e in examples} == {"cooking", "astronomy", "programming"}
    cfg = compose(f"data.train_files=[{SAMPLES / 'st_text_label.csv'}]", "train.batch_size=2", "train.max_steps=2",
                  "eval.tasks=[]")
    train(cfg)
    steps = [line for line in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines() if '"step"' in line]
    assert steps


def test_data_options_compose_and_are_checked_before_a_model_loads(compose) -> None:
    from hydra.errors import ConfigCompositionException

    from trainer.config_checks import check_train_config
    from trainer.data.dataset import load_data_config

    cfg = compose(f"data.train_files=[{SAMPLES / 'custom_columns.json'}]",
                  "data.columns={question: query, answer: pos, topic: task}", "data.source_rows=[3]")
    examples, report = load_data_config(cfg.data)
    assert [e.task for e in examples] == ["cooking"] * 3 and report.sources[0][1] == 3
    with pytest.raises(ConfigCompositionException, match="data.colums"):
        compose("data.colums={question: query}")
    for override, message in [("data.format=csv", "data.format=csv: must be auto, jsonl or hf"),
                              ("data.columns=question", "data.columns=question: must be a mapping")]:
        with pytest.raises(ValueError, match=message):
            check_train_config(compose(override))

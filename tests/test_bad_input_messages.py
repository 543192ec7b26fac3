"""Bad input and damaged files are reported as ``path:line: field: problem`` (or ``path: problem`` where no line
exists), and a damaged embedding-cache chunk is re-encoded instead of stopping the run.

    pytest -q tests/test_bad_input_messages.py
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import make_rows, write_beir

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mining_corpus_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    from trainer.data.schema import DataError
    from trainer.mining.pipeline import load_corpus

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"id": 1, "text": "fine"}\n{"id": 2, "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=rf"{re.escape(str(corpus))}:2: row: not valid UTF-8"):
        load_corpus(corpus)


def test_task_file_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    from trainer.evaluation.kinds import load_task
    from trainer.evaluation.tasks import TaskFileError

    path = tmp_path / "sts.jsonl"
    path.write_bytes(b'{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "\xff"}\n')
    with pytest.raises(TaskFileError, match=rf"{re.escape(str(path))}:2: row: not valid UTF-8"):
        load_task({"name": "s", "kind": "sts", "path": str(path)})


def test_beir_rows_without_text_or_id_and_non_numeric_qrels(tmp_path: Path) -> None:
    from trainer.evaluation.retrieval import load_beir

    folder = write_beir(tmp_path / "beir", make_rows(4))
    corpus = folder / "corpus.jsonl"
    good = corpus.read_text()
    corpus.write_text(good + '{"_id": "d9", "title": "only a title"}\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(corpus))}:5: text: missing"):
        load_beir(folder)
    corpus.write_text(good + '{"text": "no id"}\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(corpus))}:5: _id: missing"):
        load_beir(folder)
    corpus.write_text(good)
    queries = folder / "queries.jsonl"
    queries.write_text(queries.read_text() + '{"_id": "q0b", "text": 7}\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(queries))}:5: text: expected a string, got 7"):
        load_beir(folder)
    write_beir(folder, make_rows(4))
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + "q1\td2\trelevant\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(qrels))}:6: score: expected an integer, got 'relevant'"):
        load_beir(folder)


@pytest.fixture
def checkpoint(tiny_model: Path, tmp_path: Path) -> Path:
    from trainer.models.checkpoint import save_checkpoint
    from trainer.models.encoder import Encoder, EncoderSpec

    spec = EncoderSpec(max_length_query=16, max_length_passage=32)
    return save_checkpoint(Encoder.from_pretrained(str(tiny_model), spec), tmp_path / "step-000001", {"step": 1})


def test_malformed_metadata_names_the_file(checkpoint: Path) -> None:
    from trainer.evaluation.runner import load_checkpoint
    from trainer.models.checkpoint import read_metadata
    from trainer.models.encoder import Encoder

    meta = checkpoint / "embedstill.json"
    meta.write_text('{"encoder": {"pooling": "mean",\n  "normalize": tru}\n')
    expected = rf"{re.escape(str(meta))}:2: not valid JSON"
    for load in (lambda: Encoder.from_pretrained(str(checkpoint)), lambda: read_metadata(checkpoint),
                 lambda: load_checkpoint(checkpoint, "cpu")):
        with pytest.raises(ValueError, match=expected):
            load()
    meta.write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(meta))}: encoder: missing"):
        Encoder.from_pretrained(str(checkpoint))


def test_corrupt_safetensors_are_named_as_corrupt(checkpoint: Path, tmp_path: Path) -> None:
    from trainer.evaluation.watcher import EvalState, watch_run
    from trainer.models.encoder import Encoder

    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut off, as by a full disk
    with pytest.raises(ValueError, match=rf"{re.escape(str(weights))}: corrupt safetensors file"):
        Encoder.from_pretrained(str(checkpoint))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint.rename(run / "checkpoints" / checkpoint.name)
    beir = write_beir(tmp_path / "beir", make_rows(6))
    watch_run(run, [{"name": "ret", "kind": "retrieval", "path": str(beir)}], watch=False, device="cpu",
              log=lambda _: None)
    entry = EvalState(run / "eval").data["checkpoints"]["step-000001"]
    assert entry["status"] == "failed" and "model.safetensors: corrupt safetensors file" in entry["error"]
    failures = EvalState(run / "eval").failures(["step-000001"], [], {})  # the CLI exits 1 on these
    assert len(failures) == 1 and "corrupt safetensors file" in failures[0]


def test_corrupt_cache_chunk_is_reported_and_re_encoded(tiny_model: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from trainer.encoding import encode_cached
    from trainer.models.encoder import Encoder, EncoderSpec

    encoder = Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_passage=32))
    texts = [r["pos"][0] for r in make_rows(12)]
    first = encode_cached(encoder, texts, "passage", cache_root=tmp_path, chunk_size=5)  # 3 chunks
    chunks = sorted(tmp_path.rglob("chunk-*.npz"))
    assert len(chunks) == 3
    chunks[1].write_bytes(b"PK\x03\x04 not a zip any more")
    with caplog.at_level(logging.WARNING):
        again = encode_cached(encoder, texts, "passage", cache_root=tmp_path, chunk_size=5)
    np.testing.assert_allclose(again, first, atol=1e-6)
    assert str(chunks[1]) in caplog.text and "corrupt" in caplog.text  # named, then re-encoded
    assert len(sorted(tmp_path.rglob("chunk-*.npz"))) == 3  # the damaged chunk was set aside and replaced
    assert encode_cached(encoder, texts, "passage", cache_root=tmp_path).shape == first.shape


def test_corrupt_stored_search_result_is_searched_again(tiny_model: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from trainer.data.schema import Example
    from trainer.mining.config import IndexConfig, SelectConfig
    from trainer.mining.pipeline import mine_negatives
    from trainer.models.encoder import Encoder, EncoderSpec

    encoder = Encoder.from_pretrained(str(tiny_model), EncoderSpec(max_length_passage=32))
    rows = make_rows(8)
    examples = [Example(r["query"], r["pos"]) for r in rows]
    corpus = [r["pos"][0] for r in rows] + [f"w{i} w{i + 3} the news" for i in range(10)]
    select = SelectConfig(num_negatives=2, relative=None, max_rank=5)
    first = mine_negatives(encoder, examples, corpus, IndexConfig(), select, cache_root=tmp_path)
    stored, = (tmp_path / "candidates").glob("*.npz")
    stored.write_bytes(b"damaged")
    with caplog.at_level(logging.WARNING):
        again = mine_negatives(encoder, examples, corpus, IndexConfig(), select, cache_root=tmp_path)
    assert again.negatives == first.negatives and "candidates_cached" not in again.counts
    assert str(stored) in caplog.text and "corrupt" in caplog.text

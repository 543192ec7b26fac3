"""Domain adaptation: text folder reading, pseudo-queries, merge, and the whole job on the tiny model.

    pytest -q tests/test_domain.py
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Optional

import pytest
import torch

from conftest import WORDS


def shout_generator(docs: list[str], seed: int) -> list[Optional[str]]:
    """A user query generator for the hook test: first three words, upper-cased; skips odd documents."""
    return [" ".join(d.split()[:3]).upper() if i % 2 == 0 else None for i, d in enumerate(docs)]


def _domain_folder(folder: Path, n_docs: int, seed: int = 0) -> Path:
    """Text files of synthetic documents (tiny-vocabulary words), one per line, plus a binary file to skip."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    lines = [" ".join(rng.choice(WORDS[:200]) for _ in range(rng.randint(8, 20))) + f" http://x.co/{i}"
             for i in range(n_docs)]
    for part in range(3):
        (folder / f"part{part}.txt").write_text("\n".join(lines[part::3]) + "\n\nshort line\n")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    return folder


def test_read_documents_and_bad_folders(tmp_path: Path) -> None:
    from trainer.domain.corpus import read_documents

    docs = read_documents(_domain_folder(tmp_path / "text", 30), min_words=5)
    assert len(docs) == 30 and not any("http" in d for d in docs)  # URLs removed, short lines and binary skipped
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="the folder is empty"):
        read_documents(tmp_path / "empty")
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "a.bin").write_bytes(b"\x00\x01\x02" * 10)
    (binary / "b.dat").write_bytes(b"\xff\xfe\xfa\x00")
    with pytest.raises(ValueError, match=r"no documents .* \(2 files, 2 not UTF-8 text \(e.g. a.bin, b.dat\)\)"):
        read_documents(binary)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_documents(tmp_path / "missing")


def test_pseudo_queries_crop_ict_and_hook() -> None:
    from trainer.domain.pseudo import make_pairs

    doc = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    pairs = make_pairs([doc] * 20, "crop", seed=1)
    assert pairs == make_pairs([doc] * 20, "crop", seed=1)  # deterministic
    assert len(set(pairs)) > 5  # but different per document index
    for query, pos in pairs:
        assert query in doc and pos in doc  # contiguous spans of the document
        assert 3 <= len(query.split()) <= 6 and len(pos.split()) >= 6  # 10-50% and 50-100% of 12 words
    two = "The first sentence is here. The second one follows! And a third?"
    for query, pos in make_pairs([two] * 10, "ict", seed=0, ict_keep=0.0):
        assert query in two.split(". ")[0] + "." or query in two
        assert query not in pos and len(pos) > 0  # the query sentence is cut out of its positive
    hooked = make_pairs(["a b c d", "e f g h", "i j k l"], "crop", seed=0,
                        generator="test_domain.shout_generator")
    assert hooked == [("A B C", "a b c d"), ("I J K", "i j k l")]
    with pytest.raises(ImportError, match="domain.query_generator=nowhere.fn"):
        make_pairs(["a b c"], "crop", seed=0, generator="nowhere.fn")


def test_interpolate_and_choose_ratio(tiny_model: Path) -> None:
    from trainer.domain.merge import choose_ratio, interpolate
    from trainer.models import Encoder

    base = {"w": torch.zeros(2), "ids": torch.tensor([1, 2])}
    adapted = {"w": torch.full((2,), 2.0), "ids": torch.tensor([3, 4])}
    merged = interpolate(base, adapted, 0.25)
    assert torch.equal(merged["w"], torch.full((2,), 0.5)) and torch.equal(merged["ids"], adapted["ids"])
    with pytest.raises(ValueError, match="differ in parameters"):
        interpolate({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 0.5)

    first, second = Encoder.from_pretrained(str(tiny_model)), Encoder.from_pretrained(str(tiny_model))
    with torch.no_grad():
        for p in second.backbone.parameters():
            p.add_(1.0)
    name = "embeddings.word_embeddings.weight"
    a0, b0 = first.backbone.state_dict()[name].clone(), second.backbone.state_dict()[name].clone()
    # A score that peaks at r = 0.5: distance of the merged weights from the midpoint.
    score = lambda enc: {"dev": -float((enc.backbone.state_dict()[name] - (a0 + b0) / 2).abs().mean())}  # noqa: E731
    ratio, results = choose_ratio(first, second, [0.0, 0.5, 1.0], score)
    assert ratio == 0.5 and results[0.5]["dev"] == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(second.backbone.state_dict()[name], (a0 + b0) / 2)  # left holding the choice


def test_domain_job_end_to_end(compose, tiny_model: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from trainer.domain.job import run_domain
    from trainer.evaluation.retrieval import evaluate_retrieval, load_beir
    from trainer.models import Encoder

    text = _domain_folder(tmp_path / "text", 120)
    cfg = compose("experiment=domain_adapt", f"domain.text_dir={text}", "domain.test_docs=24", "domain.dev_docs=16",
                  "domain.num_negatives=2", f"teacher.name_or_path={tiny_model}", "teacher.pooling=mean",
                  f"teacher.cache_root={tmp_path / 'tcache'}", "train.max_steps=3", "optim.lr=1e-3",
                  f"domain.merge.general_dev={tiny_data['beir']}", "domain.merge.ratios=[0.0,0.5,1.0]",
                  "name=dom", "eval.tasks.0.max_queries=null", "model.max_length_passage=32")
    final = run_domain(cfg)
    run = Path(cfg.run_dir)
    report = json.loads((run / "domain_report.json").read_text())
    assert report["data"] == {"documents": 120, "train_pairs": 80, "dev_docs": 16, "test_docs": 24}
    ratio = report["merge"]["ratio"]
    assert ratio in (0.0, 0.5, 1.0) and set(report["merge"]["dev"]) == {"0.0", "0.5", "1.0"}
    assert list(report["test"]) == ["base", "adapted", f"merged (r={ratio:g})"]
    assert set(report["test"]["base"]) == {"in_domain/ndcg_at_10", "tiny/ndcg_at_10"}
    assert final == report["test"][f"merged (r={ratio:g})"]["in_domain/ndcg_at_10"]

    # Held-out documents never reach training.
    test_docs = {json.loads(l)["text"] for l in (run / "domain_data/in-domain-test/corpus.jsonl").open()}
    mined = [json.loads(l) for l in (run / "domain_data/train.mined.jsonl").open()]
    assert mined and all(r["neg"] and not set(r["neg"]) & set(r["pos"]) for r in mined)
    train_text = " ".join(t for r in mined for t in [r["query"], *r["pos"], *r["neg"]])
    assert not any(d in train_text for d in test_docs)

    # "before" is the base model, scored independently here.
    base = Encoder.from_pretrained(str(tiny_model), Encoder.from_config(cfg.model).spec)
    in_domain = load_beir(run / "domain_data/in-domain-test", "test")
    assert evaluate_retrieval(base, in_domain)["ndcg_at_10"] == pytest.approx(
        report["test"]["base"]["in_domain/ndcg_at_10"], abs=1e-6)

    # The merged checkpoint is the interpolation at the chosen ratio.
    adapted = Encoder.from_pretrained(json.loads((run / "DONE.json").read_text())["final_checkpoint"])
    merged = Encoder.from_pretrained(str(run / "merged"))
    name = "encoder.layer.0.attention.self.query.weight"
    expected = torch.lerp(base.backbone.state_dict()[name], adapted.backbone.state_dict()[name], ratio)
    torch.testing.assert_close(merged.backbone.state_dict()[name], expected)
    assert "| adapted - base |" in (run / "domain_report.md").read_text()


def test_one_bad_byte_costs_its_line_not_its_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from trainer.domain.corpus import read_documents

    folder = tmp_path / "text"
    folder.mkdir()
    lines = [f"document number {i} about w{i % 50} and w{i % 7}" for i in range(1000)]
    (folder / "good.txt").write_text("\n".join(lines[:500]) + "\n")
    bad = [line.encode() for line in lines[500:]]
    bad[10] = b"document with a latin-1 byte \xe9 in it here"  # one line that is not UTF-8
    (folder / "mixed.txt").write_bytes(b"\n".join(bad) + b"\n")
    with caplog.at_level("WARNING"):
        docs = read_documents(folder, min_words=5)
    assert len(docs) == 999 and lines[999] in docs and lines[510] not in docs
    assert "mixed.txt: 1" in caplog.text  # the file is named, with its count
    from trainer.domain.corpus import CorpusReport

    report = CorpusReport()
    read_documents(folder, min_words=5, report=report)
    assert report.bad_units == {"mixed.txt": 1} and report.not_text == [] and report.documents == 999
    paragraphs = tmp_path / "paragraphs"
    paragraphs.mkdir()
    (paragraphs / "p.txt").write_bytes(b"first paragraph of five words\n\nsecond \xff paragraph of five words\n\n"
                                       b"third paragraph of five words\n")
    report = CorpusReport()
    assert len(read_documents(paragraphs, unit="paragraph", report=report)) == 2 and report.bad_units == {"p.txt": 1}

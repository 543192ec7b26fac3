"""The domain-adaptation job: unlabeled text -> pseudo-queries -> teacher-mined negatives -> contrastive +
listwise distillation -> before/after eval in-domain and on a general task -> optional merge with the base.

    python -m trainer.domain experiment=domain_adapt domain.text_dir=runs/healthtweets-text

Writes into the run dir, beside the usual training files:
    domain_data/{corpus_report.json, pairs.jsonl, train.mined.jsonl, mine_report.json, in-domain-dev/,
                 in-domain-test/}
    merged/ (the merged checkpoint, when merging), domain_report.json, domain_report.md
The in-domain test and dev sets are pseudo-queries over documents held out from training.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from accelerate import PartialState
from omegaconf import DictConfig, OmegaConf, open_dict

from trainer.config import EvalTaskConfig
from trainer.domain.corpus import CorpusReport, read_documents
from trainer.domain.pseudo import make_pairs
from trainer.evaluation.kinds import main_metric
from trainer.evaluation.tasks import check_task_names
from trainer.run import write_json_atomic

IN_DOMAIN = "in_domain"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def write_eval_set(folder: Path, pairs: list[tuple[str, str]], docs: list[str]) -> None:
    """BEIR folder: pseudo-query i -> document i (the full held-out document, not the crop)."""
    _write_jsonl(folder / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": d} for i, d in enumerate(docs)])
    _write_jsonl(folder / "queries.jsonl", [{"_id": f"q{i}", "text": q} for i, (q, _) in enumerate(pairs)])
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                                "".join(f"q{i}\td{i}\t1\n" for i in range(len(pairs))))


def prepare(cfg: DictConfig, data_dir: Path) -> dict[str, Any]:
    """Split documents (test / dev / train), write pseudo-query pairs and the two held-out eval sets."""
    d = cfg.domain
    corpus = CorpusReport()
    docs = read_documents(d.text_dir, d.unit, d.min_words, d.strip_urls, d.max_docs, d.seed, report=corpus)
    data_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(data_dir / "corpus_report.json", asdict(corpus))  # what was read, what skipped and why
    print(f"domain text: {corpus.summary()}")
    min_train = 2 * cfg.train.batch_size
    if len(docs) < d.test_docs + d.dev_docs + min_train:
        raise ValueError(f"domain.text_dir={d.text_dir}: {len(docs)} documents, fewer than domain.test_docs "
                         f"({d.test_docs}) + domain.dev_docs ({d.dev_docs}) + two batches to train on ({min_train})")
    test, dev, train = docs[:d.test_docs], docs[d.test_docs:d.test_docs + d.dev_docs], docs[d.test_docs + d.dev_docs:]
    kwargs = dict(mode=d.query_mode, generator=d.query_generator, query_ratio=list(d.query_ratio),
                  pos_ratio=list(d.pos_ratio), ict_keep=d.ict_keep)
    write_eval_set(data_dir / "in-domain-test", make_pairs(test, seed=d.seed + 1, **kwargs), test)
    write_eval_set(data_dir / "in-domain-dev", make_pairs(dev, seed=d.seed + 2, **kwargs), dev)
    pairs = make_pairs(train, seed=d.seed, **kwargs)
    _write_jsonl(data_dir / "pairs.jsonl", [{"query": q, "pos": [p], "neg": []} for q, p in pairs])
    return {"documents": len(docs), "train_pairs": len(pairs), "dev_docs": len(dev), "test_docs": len(test)}


def mine_with_teacher(cfg: DictConfig, data_dir: Path) -> dict[str, Any]:
    """Hard negatives for each pseudo-query from the teacher's ranking of the training positives."""
    from trainer.data.dataset import load_examples
    from trainer.mining.config import IndexConfig, SelectConfig
    from trainer.mining.pipeline import default_corpus, mine_negatives, output_rows
    from trainer.models.encoder import Encoder, EncoderSpec

    if cfg.teacher is None or not cfg.teacher.get("name_or_path"):
        raise ValueError("domain adaptation mines negatives with the teacher: set teacher=mpnet (or teacher.*)")
    d = cfg.domain
    miner = Encoder.from_pretrained(cfg.teacher.name_or_path, EncoderSpec.from_mapping(cfg.teacher))
    examples, _ = load_examples([str(data_dir / "pairs.jsonl")])
    select = SelectConfig(num_negatives=d.num_negatives, max_rank=d.mine_max_rank, relative=d.mine_relative)
    started = time.perf_counter()
    res = mine_negatives(miner, examples, default_corpus(examples), IndexConfig(), select,
                         batch_size=d.mine_batch_size)
    rows = [r for r in output_rows(examples, res, keep_existing=False) if r["neg"]]
    _write_jsonl(data_dir / "train.mined.jsonl", rows)
    report = {"pairs": len(examples), "rows_with_negatives": len(rows), "counts": dict(res.counts),
              "seconds": time.perf_counter() - started, "miner": str(cfg.teacher.name_or_path)}
    write_json_atomic(data_dir / "mine_report.json", report)
    return report


def dev_scorer(cfg: DictConfig, data_dir: Path) -> Any:
    """encoder -> {in_domain: nDCG@10 on the in-domain dev set, general: on the general dev set (if set)}."""
    from trainer.evaluation.retrieval import evaluate_retrieval, load_beir

    merge = cfg.domain.merge
    sets = {IN_DOMAIN: load_beir(data_dir / "in-domain-dev", "test")}
    if merge.general_dev:
        sets["general"] = load_beir(merge.general_dev, merge.general_dev_split, merge.general_dev_max_queries)
    return lambda encoder: {name: evaluate_retrieval(encoder, data, cfg.eval.batch_size)["ndcg_at_10"]
                            for name, data in sets.items()}


def report_markdown(report: dict[str, Any]) -> str:
    rows = report["test"]
    keys = list(rows["base"])
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, scores in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{scores[k]:.4f}" for k in keys) + " |")
    for name in [n for n in rows if n != "base"]:
        lines.append(f"| {name} - base | " + " | ".join(f"{rows[name][k] - rows['base'][k]:+.4f}" for k in keys)
                     + " |")
    return "\n".join(lines) + "\n"


def run_domain(cfg: DictConfig) -> Optional[float]:
    """The whole job; returns the in-domain main score of the final (merged, else adapted) model."""
    from trainer.loop import train

    if cfg.get("domain") is None:
        raise ValueError("domain: not configured; run python -m trainer.domain experiment=domain_adapt "
                         "domain.text_dir=<folder of text files>")
    check_task_names([*cfg.eval.tasks, {"name": IN_DOMAIN}])  # before any work: each name is a result file's name
    state = PartialState()
    data_dir = Path(cfg.run_dir) / "domain_data"
    report: dict[str, Any] = {}
    if state.is_main_process:
        report["data"] = prepare(cfg, data_dir)
        write_json_atomic(data_dir / "prepare_report.json", report["data"])
        report["mining"] = mine_with_teacher(cfg, data_dir)
        print(f"domain data: {report['data']}; mined: {report['mining']['rows_with_negatives']} rows")
    state.wait_for_everyone()
    with open_dict(cfg):
        cfg.data.train_files = [str(data_dir / "train.mined.jsonl")]
        in_domain = EvalTaskConfig(name=IN_DOMAIN, kind="retrieval", path=str(data_dir / "in-domain-test"),
                                   split="test", main_score="ndcg_at_10")
        cfg.eval.tasks = [OmegaConf.structured(in_domain), *cfg.eval.tasks]
        cfg.eval.before_training = True  # the base model's scores: the "before" of the report
    train(cfg)
    if not state.is_main_process:
        return None
    return finish(cfg, report)


def finish(cfg: DictConfig, report: dict[str, Any]) -> float:
    """After training: before/after from eval.jsonl, the merge, the report. Reruns alone on a finished run dir."""
    from trainer.build import Evaluator
    from trainer.models.checkpoint import save_checkpoint
    from trainer.models.encoder import Encoder

    run_dir, data_dir = Path(cfg.run_dir), Path(cfg.run_dir) / "domain_data"
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines() if line.strip()]
    keys = [main_metric(t) for t in cfg.eval.tasks]
    report["test"] = {"base": {k: evals[0][k] for k in keys}, "adapted": {k: evals[-1][k] for k in keys}}
    final = json.loads((run_dir / "DONE.json").read_text())["final_checkpoint"]
    if cfg.domain.merge.enabled:
        base, adapted = Encoder.from_config(cfg.model), Encoder.from_pretrained(final)
        ratio, dev = choose_ratio_on_dev(cfg, data_dir, base, adapted)
        merged_scores = Evaluator(cfg.eval)(adapted)
        report["merge"] = {"ratio": ratio, "dev": {str(r): s for r, s in dev.items()}}
        report["test"][f"merged (r={ratio:g})"] = {k: merged_scores[k] for k in keys}
        save_checkpoint(adapted, run_dir / "merged", {"merged": {"ratio": ratio, "base": cfg.model.name_or_path,
                                                                  "adapted": final}, "run": str(run_dir)})
    report.setdefault("data", json.loads((data_dir / "prepare_report.json").read_text())
                      if (data_dir / "prepare_report.json").exists() else None)
    report.setdefault("mining", json.loads((data_dir / "mine_report.json").read_text()))
    if (data_dir / "corpus_report.json").exists():
        report.setdefault("corpus", json.loads((data_dir / "corpus_report.json").read_text()))
    write_json_atomic(run_dir / "domain_report.json", report)
    table = report_markdown(report)
    (run_dir / "domain_report.md").write_text(table)
    print(table)
    return list(report["test"].values())[-1][keys[0]]


def choose_ratio_on_dev(cfg: DictConfig, data_dir: Path, base: Any, adapted: Any) -> tuple[float, dict]:
    from trainer.domain.merge import choose_ratio

    return choose_ratio(base, adapted, list(cfg.domain.merge.ratios), dev_scorer(cfg, data_dir))

"""A larger dev set for choosing distillation recipes: the 300 dev headlines plus a held-out fold of training ones.

    python bench/dev_fold.py                      # -> runs/dev-fold/ (training files without the fold, BEIR folder)
    python -m trainer.train --config-dir runs/dev-fold/conf experiment=distill_unlabeled +fold=on name=fold-base
    python bench/dev_fold.py --score BASE TEACHER runs/fold-base/checkpoints/step-000068   # -> runs/dev-fold/scores.json

Why: with 300 dev headlines a paired difference between two recipes has a standard error near 0.01 nDCG, a quarter
of the base-to-teacher gap on news-full, and every recipe scored within 0.01 of the teacher there. Holding out
``--fold`` training headlines (seeded) and searching them with the dev ones against every prepared article gives
``300 + fold`` queries. The fold's headlines, and every training text drawn from a fold article (its hard-negative
appearances, its unlabeled windows and headline), are removed from what the fold recipe trains on, so a fold query
is as unseen as a dev one. Recipes are chosen here; the chosen one is then trained on every training row and scored
on the test split once.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BUILD = ROOT / "data" / "build"
NEWS = BUILD / "news"
DISTILL = BUILD / "distill"

from trainer.io import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402
from trainer.io import read_jsonl as read_numbered  # noqa: E402
from trainer.mining.report import jsonl_lines  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    return [row for _, row in read_numbered(path)]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, jsonl_lines(rows))


def build(out: Path, fold: int, seed: int) -> dict:
    inputs = BUILD.resolve()
    if out.resolve() == inputs or inputs in out.resolve().parents or out.resolve() in inputs.parents:
        raise SystemExit(f"--out {out} overlaps the prepared data it reads ({inputs}): choose a folder outside it")
    mined = read_jsonl(NEWS / "mined-teacher" / "train.jsonl")
    articles = {row["text"]: row for row in read_jsonl(NEWS / "articles.jsonl")}
    held = random.Random(seed).sample(range(len(mined)), fold)
    held_rows = [mined[i] for i in sorted(held)]
    held_texts = {row["pos"][0] for row in held_rows}
    held_queries = {row["query"] for row in held_rows}
    missing = [text for text in held_texts if text not in articles]
    if missing:
        raise SystemExit(f"{len(missing)} fold positives are not in {NEWS / 'articles.jsonl'}: rebuild the data")

    train, held_set = [], set(held)
    for i, row in enumerate(mined):
        if i in held_set:
            continue
        keep = [j for j, neg in enumerate(row["neg"]) if neg not in held_texts]
        if keep:  # a row whose every mined negative was a fold article is dropped, as mining drops such rows
            cut = {key: [row[key][j] for j in keep] for key in ("neg", "neg_scores") if row.get(key) is not None}
            train.append({**row, **cut})
    write_jsonl(out / "train.jsonl", train)

    # Unlabeled texts: drop the fold's headlines and any window cut from a fold article (windows re-join words).
    held_flat = [" ".join(text.split()) for text in held_texts]
    unlabeled = {}
    for path in sorted(DISTILL.glob("*.jsonl")):
        rows = read_jsonl(path)
        kept = [r for r in rows if r["text"] not in held_queries
                and not any(" ".join(r["text"].split()[:12]) in text for text in held_flat)]
        write_jsonl(out / "distill" / path.name, kept)
        unlabeled[path.name] = {"rows": len(rows), "kept": len(kept)}

    # BEIR folder: dev headlines + fold headlines against every prepared article.
    dev = NEWS / "beir-full-dev"
    queries = read_jsonl(dev / "queries.jsonl")
    qrels = [line.rstrip("\n").split("\t") for line in (dev / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    for n, row in enumerate(held_rows):
        article = articles[row["pos"][0]]
        qid = f"fold{n}"
        queries.append({"_id": qid, "text": row["query"]})
        qrels.append([qid, f"d{article['id']}", "1"])
    beir = out / "beir-full-devfold"
    write_jsonl(beir / "queries.jsonl", queries)
    atomic_write_text(beir / "qrels" / "test.tsv",
                      "query-id\tcorpus-id\tscore\n" + "".join("\t".join(q) + "\n" for q in qrels))
    corpus = beir / "corpus.jsonl"
    atomic_write_bytes(corpus, (dev / "corpus.jsonl").read_bytes())
    write_overrides(out, sorted(unlabeled))
    summary = {"fold": fold, "seed": seed, "train_rows": len(train), "queries": len(queries),
               "corpus": sum(1 for _ in corpus.open()), "unlabeled": unlabeled}
    atomic_write_json(out / "summary.json", summary)
    return summary


def write_overrides(out: Path, unlabeled: list[str]) -> None:
    """``--config-dir OUT/conf ... +fold=on``: the fold's training rows, unlabeled texts and dev tasks.

    Absolute paths: the override is read from whatever folder training starts in."""
    out = out.resolve()
    lines = ["# @package _global_", f"# written by bench/dev_fold.py", "data:", "  train_files:",
             f"    - {out / 'train.jsonl'}", "distill:", "  unlabeled:", "    files:"]
    lines += [f"      - {out / 'distill' / name}" for name in unlabeled]
    lines += ["eval:", "  tasks:", "    - name: news-full-devfold", "      kind: retrieval",
              f"      path: {out / 'beir-full-devfold'}", "      split: test", "      task: news",
              "      main_score: ndcg_at_10"]
    atomic_write_text(out / "conf" / "fold" / "on.yaml", "\n".join(lines) + "\n")


def score(out: Path, checkpoints: list[str], precision: str) -> dict:
    """news-full-devfold nDCG@10 of each checkpoint (plain model folders read as the recipe's student: mean pooling,
    32/128 tokens), through the project's evaluator; results are added to ``out/scores.json``."""
    sys.path.insert(0, str(ROOT / "bench"))
    from headline import as_checkpoint, evaluate  # noqa: E402

    task = {"name": "news-full-devfold", "kind": "retrieval", "path": str(out / "beir-full-devfold"),
            "split": "test", "task": "news", "main_score": "ndcg_at_10"}
    path = out / "scores.json"
    scores = json.loads(path.read_text()) if path.exists() else {}
    for ckpt in checkpoints:
        slug = "devfold-" + "-".join(Path(ckpt).resolve().parts[-3:])
        result = evaluate(as_checkpoint(ckpt, slug, 32, 128), slug, [task], precision)["news-full-devfold"]
        scores[str(ckpt)] = {"ndcg_at_10": result["ndcg_at_10"], "recall_at_1": result["recall_at_1"],
                             "precision": precision}
        print(f"{ckpt}: {scores[str(ckpt)]}", flush=True)
        atomic_write_json(path, scores)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "dev-fold")
    parser.add_argument("--fold", type=int, default=600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--score", nargs="+", metavar="CHECKPOINT", help="score checkpoints on the built fold")
    parser.add_argument("--precision", default="auto", help="auto: exact float32 on CPU, as training's dev eval")
    args = parser.parse_args(argv)
    if args.score:
        score(args.out, args.score, args.precision)
    else:
        print(json.dumps(build(args.out, args.fold, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

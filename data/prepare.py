"""Build training/evaluation files from real text shipped in installed packages.

    python data/prepare.py all                     # news + WordNet into data/build/ (skips what is built)
    python data/prepare.py news --force            # rebuild data/build/news/
    python data/prepare.py wordnet --max-train 20000 --seed 13 --out data/build-alt

Outputs per source (<out>/<source>/): train.jsonl, dev.jsonl, test.jsonl in the training schema,
beir-dev/ and beir-test/ (corpus.jsonl, queries.jsonl, qrels/test.tsv) and manifest.json; news also writes
articles.jsonl and beir-full-dev/, beir-full-test/ (the same headlines searched against every prepared
article). See data/README.md. A source is skipped when its manifest records the same parameters and every
listed file exists; --force rebuilds. Every file is written atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent):  # data/ for news.py and wordnet.py, the repo root for `trainer`
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import news  # noqa: E402
import wordnet  # noqa: E402
from trainer import assets  # noqa: E402

FORMAT_VERSION = 1
SPLITS = ("train", "dev", "test")
Beir = tuple[list[dict[str, str]], list[dict[str, str]], list[tuple[str, str, int]]]


# ----------------------------------------------------------------------------- writing

def atomic_write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write lines (each without its newline) to a temp file next to path, then os.replace it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for line in lines:
                fh.write(line)
                fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_lines(path, (json.dumps(row, ensure_ascii=False) for row in rows))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_lines(path, [json.dumps(obj, ensure_ascii=False, indent=2)])


def write_beir(folder: Path, beir: Beir) -> list[Path]:
    """BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv (header query-id, corpus-id, score)."""
    corpus, queries, qrels = beir
    write_jsonl(folder / "corpus.jsonl", corpus)
    write_jsonl(folder / "queries.jsonl", queries)
    atomic_write_lines(folder / "qrels" / "test.tsv",
                       ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels])
    return [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / "test.tsv"]


# ----------------------------------------------------------------------------- skip logic

def up_to_date(folder: Path, params: dict[str, Any]) -> bool:
    """True when folder/manifest.json has these params and every file it lists exists."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return manifest.get("params") == params and all((folder / f).exists() for f in manifest.get("files", []))


def finish(folder: Path, params: dict[str, Any], files: list[Path], summary: dict[str, Any]) -> None:
    """Write the manifest last: its presence means every other file is complete."""
    write_json(folder / "manifest.json", {"params": params, "files": sorted(str(f.relative_to(folder)) for f in files),
                                          "summary": summary})


def input_fingerprint(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size}


# ----------------------------------------------------------------------------- sources

def build_news(out: Path, seed: int, min_text_chars: int, force: bool) -> dict[str, Any] | None:
    """Build <out>/news/; returns a summary, or None when skipped because it is up to date."""
    zip_path = assets.news_zip()
    if not zip_path.exists():
        raise assets.AssetMissing(f"{zip_path} does not exist: {assets.INSTALL_HINT}")
    folder = out / "news"
    params = {"version": FORMAT_VERSION, "seed": seed, "min_text_chars": min_text_chars,
              "n_test": 500, "n_dev": 300, "full_corpus": True,
              "input": input_fingerprint(zip_path)}
    if not force and up_to_date(folder, params):
        return None
    rows = news.read_news_csv(zip_path)
    articles, stats = news.clean_articles(rows, min_text_chars=min_text_chars)
    splits = news.split_articles(articles, seed, n_test=params["n_test"], n_dev=params["n_dev"])
    files: list[Path] = []
    for name in SPLITS:
        write_jsonl(folder / f"{name}.jsonl", (news.training_row(a) for a in splits[name]))
        files.append(folder / f"{name}.jsonl")
    for name in ("dev", "test"):
        files += write_beir(folder / f"beir-{name}", news.beir_split(splits[name]))
        # news-full: the same headlines against every prepared article (train + dev + test)
        files += write_beir(folder / f"beir-full-{name}", news.beir_full_corpus(splits[name], articles))
    split_of = {a.id: name for name, part in splits.items() for a in part}
    write_jsonl(folder / "articles.jsonl", (news.article_record(a, split_of[a.id]) for a in articles))
    files.append(folder / "articles.jsonl")
    outlets: dict[str, int] = {}
    for a in articles:
        outlets[a.outlet] = outlets.get(a.outlet, 0) + 1
    summary = {"rows": {name: len(splits[name]) for name in SPLITS}, "csv_rows": stats.rows,
               "dropped": {"missing_title_or_text": stats.missing_title_or_text, "too_short": stats.too_short,
                           "duplicate_title": stats.duplicate_title, "duplicate_text": stats.duplicate_text},
               "outlets": dict(sorted(outlets.items(), key=lambda kv: -kv[1]))}
    finish(folder, params, files, summary)
    return summary


def build_wordnet(out: Path, seed: int, max_train: int | None, force: bool) -> dict[str, Any] | None:
    """Build <out>/wordnet/; returns a summary, or None when skipped because it is up to date."""
    wn_dir = assets.wordnet_dir()
    folder = out / "wordnet"
    params = {"version": FORMAT_VERSION, "seed": seed, "max_train": max_train, "n_test": 1000, "n_dev": 1000,
              "max_definitions": wordnet.MAX_DEFINITIONS,
              "input": [input_fingerprint(wn_dir / f"data.{pos}") for pos in wordnet.POS_FILES]}
    if not force and up_to_date(folder, params):
        return None
    synsets = wordnet.read_synsets(wn_dir)
    entries, dropped = wordnet.build_entries(synsets, wordnet.read_sense_ranks(wn_dir))
    splits, stats = wordnet.split_entries(entries, seed, n_test=params["n_test"], n_dev=params["n_dev"],
                                          max_train=max_train)
    files: list[Path] = []
    for name in SPLITS:
        write_jsonl(folder / f"{name}.jsonl", (wordnet.training_row(t, d) for t, d in splits[name].items()))
        files.append(folder / f"{name}.jsonl")
    for name in ("dev", "test"):
        files += write_beir(folder / f"beir-{name}", wordnet.beir_split(splits[name]))
    summary = {"rows": {name: len(splits[name]) for name in SPLITS}, "synsets": len(synsets),
               "lemmas": len(entries), "dropped_empty_definition": dropped,
               "dev_candidates_moved_to_train": stats.moved_to_train,
               "train_definitions_removed_as_held_out": stats.train_definitions_removed,
               "train_rows_emptied": stats.train_rows_emptied, "train_rows_capped": stats.train_capped}
    finish(folder, params, files, summary)
    return summary


# ----------------------------------------------------------------------------- CLI

def run_source(name: str, build: Callable[[], dict[str, Any] | None], out: Path) -> None:
    start = time.perf_counter()
    summary = build()
    if summary is None:
        print(f"[{name}] skipped: {out / name} is up to date (use --force to rebuild)")
        return
    rows = ", ".join(f"{k} {v}" for k, v in summary["rows"].items())
    extra = {k: v for k, v in summary.items() if k != "rows"}
    print(f"[{name}] wrote {out / name}: {rows} rows in {time.perf_counter() - start:.1f}s")
    for key, value in extra.items():
        print(f"[{name}]   {key}: {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("source", choices=("news", "wordnet", "all"))
    parser.add_argument("--out", type=Path, default=HERE / "build", help="output root (default: data/build)")
    parser.add_argument("--seed", type=int, default=13, help="split seed (default: 13)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the outputs are up to date")
    parser.add_argument("--max-train", type=int, default=None, metavar="N",
                        help="WordNet: keep at most N train rows (deterministic subset; default: all)")
    parser.add_argument("--min-text-chars", type=int, default=news.MIN_TEXT_CHARS, metavar="N",
                        help=f"news: drop articles whose text is shorter (default: {news.MIN_TEXT_CHARS})")
    parser.add_argument("--strict", action="store_true", help="with `all`: fail when WordNet is not installed")
    args = parser.parse_args(argv)
    if args.max_train is not None and args.max_train < 0:
        parser.error("--max-train must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    start = time.perf_counter()
    status = 0
    if args.source in ("news", "all"):
        try:
            run_source("news", lambda: build_news(out, args.seed, args.min_text_chars, args.force), out)
        except assets.AssetMissing as err:
            print(f"[news] error: {err}", file=sys.stderr)
            status = 1
    if args.source in ("wordnet", "all"):
        try:
            run_source("wordnet", lambda: build_wordnet(out, args.seed, args.max_train, args.force), out)
        except assets.AssetMissing as err:
            if args.source == "all" and not args.strict:
                print(f"[wordnet] skipped, WordNet is not installed: {err} (continuing; --strict makes this an error)")
            else:
                print(f"[wordnet] error: {err}", file=sys.stderr)
                status = 1
    print(f"done in {time.perf_counter() - start:.1f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())

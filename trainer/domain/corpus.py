"""Unlabeled domain text: read a folder of text files into documents; extract the bundled health tweets.

    python -m trainer.domain.corpus healthtweets runs/healthtweets-text --max-docs 6000   # a folder of .txt files
    python -m trainer.domain experiment=domain_adapt domain.text_dir=runs/healthtweets-text

A document is a line (``unit=line``), a blank-line separated paragraph (``paragraph``) or a whole file (``file``).
Every regular, non-hidden file under the folder is read if it is UTF-8 text (no NUL bytes); anything else is skipped
and counted, and a folder with no usable text stops with a message that says what was found.
"""
from __future__ import annotations

import argparse
import csv
import io
import random
import re
import zipfile
from pathlib import Path

URL = re.compile(r"https?://\S+|www\.\S+")
UNITS = ("line", "paragraph", "file")


def _read_text(path: Path) -> str | None:
    """The file's text, or None when it is not UTF-8 text."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _split(text: str, unit: str) -> list[str]:
    if unit == "line":
        return text.splitlines()
    if unit == "paragraph":
        return re.split(r"\n\s*\n", text)
    return [text]


def read_documents(folder: str | Path, unit: str = "line", min_words: int = 5, strip_urls: bool = True,
                   max_docs: int | None = None, seed: int = 0) -> list[str]:
    """Distinct documents (whitespace-normalised, URLs removed) of at least ``min_words`` words, in a seeded order."""
    folder = Path(folder)
    if unit not in UNITS:
        raise ValueError(f"domain.unit must be one of {UNITS}, got {unit!r}")
    if not folder.is_dir():
        raise FileNotFoundError(f"domain.text_dir={folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in
                                                                            p.relative_to(folder).parts))
    if not files:
        raise ValueError(f"domain.text_dir={folder}: the folder is empty: put UTF-8 text files in it "
                         f"(one document per {unit}; domain.unit=line|paragraph|file)")
    docs: dict[str, None] = {}
    skipped: list[str] = []
    for path in files:
        text = _read_text(path)
        if text is None:
            skipped.append(path.name)
            continue
        for piece in _split(text, unit):
            clean = " ".join((URL.sub(" ", piece) if strip_urls else piece).split())
            if len(clean.split()) >= min_words:
                docs[clean] = None
    if not docs:
        found = f"{len(files)} files, {len(skipped)} not UTF-8 text" + (f" (e.g. {', '.join(skipped[:3])})"
                                                                         if skipped else "")
        raise ValueError(f"domain.text_dir={folder}: no documents of >= {min_words} words found ({found}): it needs "
                         f"UTF-8 text files, one document per {unit}")
    out = list(docs)
    random.Random(seed).shuffle(out)
    return out[:max_docs] if max_docs else out


def extract_healthtweets(out_dir: str | Path, max_docs: int | None = None) -> Path:
    """The bundled health tweets as one ``<account>.txt`` per account, one tweet per line."""
    from trainer.assets import healthtweets_zip

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(healthtweets_zip()) as archive:
        rows = list(csv.DictReader(io.TextIOWrapper(archive.open("healthtweets.csv"), encoding="utf-8")))
    random.Random(0).shuffle(rows)
    by_account: dict[str, list[str]] = {}
    for row in rows[:max_docs] if max_docs else rows:
        by_account.setdefault(row["source_id"].split("-")[0], []).append(" ".join(row["text"].split()))
    for account, tweets in by_account.items():
        (out / f"{account}.txt").write_text("\n".join(tweets) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="extract bundled unlabeled text to a folder of .txt files")
    parser.add_argument("source", choices=["healthtweets"])
    parser.add_argument("out_dir")
    parser.add_argument("--max-docs", type=int, default=None)
    args = parser.parse_args()
    print(extract_healthtweets(args.out_dir, args.max_docs))

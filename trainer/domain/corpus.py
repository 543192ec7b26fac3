"""Unlabeled domain text: read a folder of text files into documents; extract the bundled health tweets.

    python -m trainer.domain.corpus healthtweets runs/healthtweets-text --max-docs 6000   # a folder of .txt files
    python -m trainer.domain experiment=domain_adapt domain.text_dir=runs/healthtweets-text

A document is a line (``unit=line``), a blank-line separated paragraph (``paragraph``) or a whole file (``file``).
Every regular, non-hidden file under the folder is read; a binary file (NUL bytes) is skipped and counted, and a
line (paragraph, file) that is not UTF-8 is skipped and counted on its own, named by its file, so one bad byte
never costs the rest of a file. A folder with no usable text stops with a message that says what was found.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
URL = re.compile(r"https?://\S+|www\.\S+")
UNITS = ("line", "paragraph", "file")


@dataclass
class CorpusReport:
    """What ``read_documents`` read and what it skipped (file paths relative to the folder)."""
    files: int = 0
    not_text: list[str] = field(default_factory=list)  # skipped whole: binary (NUL bytes)
    bad_units: dict[str, int] = field(default_factory=dict)  # file -> lines/paragraphs skipped: not UTF-8
    documents: int = 0

    def summary(self) -> str:
        bad = ", ".join(f"{name}: {n}" for name, n in self.bad_units.items())
        return (f"{self.documents} documents from {self.files} files; {len(self.not_text)} files not text"
                + (f" ({', '.join(self.not_text[:3])}{', ...' if len(self.not_text) > 3 else ''})" if self.not_text
                   else "") + (f"; units skipped as not UTF-8: {bad}" if bad else ""))


def _split(text: str, unit: str) -> list[str]:
    if unit == "line":
        return text.splitlines()
    if unit == "paragraph":
        return re.split(r"\n\s*\n", text)
    return [text]


def _read_units(path: Path, unit: str) -> tuple[list[str], int] | None:
    """The file's units (lines, paragraphs or the whole file) that are UTF-8 and how many were not; None for a
    binary file (NUL bytes). One bad byte costs its own unit, never the rest of the file."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        return None
    try:
        return _split(data.decode("utf-8"), unit), 0
    except UnicodeDecodeError:
        pass
    pieces = {"line": data.splitlines(), "paragraph": re.split(rb"\n\s*\n", data), "file": [data]}[unit]
    units, bad = [], 0
    for piece in pieces:
        try:
            units.extend(_split(piece.decode("utf-8"), unit))
        except UnicodeDecodeError:
            bad += 1
    return units, bad


def read_documents(folder: str | Path, unit: str = "line", min_words: int = 5, strip_urls: bool = True,
                   max_docs: int | None = None, seed: int = 0, report: CorpusReport | None = None) -> list[str]:
    """Distinct documents (whitespace-normalised, URLs removed) of at least ``min_words`` words, in a seeded order.

    Binary files are skipped whole, lines (paragraphs, files) that are not UTF-8 one by one; both are counted in
    ``report`` and logged with the files' names.
    """
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
    report = report if report is not None else CorpusReport()
    report.files = len(files)
    docs: dict[str, None] = {}
    for path in files:
        read = _read_units(path, unit)
        if read is None:
            report.not_text.append(str(path.relative_to(folder)))
            continue
        if read[1]:
            report.bad_units[str(path.relative_to(folder))] = read[1]
        for piece in read[0]:
            clean = " ".join((URL.sub(" ", piece) if strip_urls else piece).split())
            if len(clean.split()) >= min_words:
                docs[clean] = None
    report.documents = len(docs)
    if report.bad_units:
        log.warning("domain.text_dir=%s: %s", folder, report.summary())
    if not docs:
        skipped, bad = report.not_text, report.bad_units
        found = (f"{len(files)} files, {len(skipped)} not UTF-8 text" + (f" (e.g. {', '.join(skipped[:3])})"
                                                                          if skipped else "")
                 + (f", {sum(bad.values())} {unit}s not UTF-8 in {', '.join(list(bad)[:3])}" if bad else ""))
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

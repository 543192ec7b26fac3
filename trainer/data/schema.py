"""The training-data schema and its row validator.

    python -m trainer.data.schema data/build/news/train.jsonl     # validate a file, print counts

One JSON object per line: ``{"query", "pos": [...], "neg": [...], "task"?, "instruction"?, "label"?,
"pos_scores"?, "neg_scores"?}`` (see data/README.md). ``label`` marks rows of a label task (classification or
clustering learned as "same label" retrieval): in-batch candidates of a row with the same task and label are
positives too, masked out of the loss rather than learned as negatives. A bad row stops the load with ``path:line: field: what is wrong``;
with ``on_error="skip"`` it is skipped and counted instead. Rows in other formats (FlagEmbedding, sentence-transformers,
``data.columns``) are mapped onto this schema first (``trainer.data.formats``); fields no format knows are ignored and
counted in the load report, so ``validate_row`` alone (strict) still refuses them.
"""
from __future__ import annotations

import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from trainer.data.fields import KNOWN_FIELDS, DataError
from trainer.data.formats import check_columns, label_table_text, rename, to_schema

__all__ = ["DataError", "Example", "KNOWN_FIELDS", "LoadReport", "iter_jsonl", "iter_records", "read_row",
           "validate_row"]



@dataclass
class Example:
    query: str
    pos: list[str]
    neg: list[str] = field(default_factory=list)
    task: Optional[str] = None
    instruction: Optional[str] = None
    label: Optional[str] = None  # same task + same label = not a negative of each other
    pos_scores: Optional[list[float]] = None
    neg_scores: Optional[list[float]] = None


def _fail(where: str, name: str, message: str) -> DataError:
    return DataError(f"{where}: {name}: {message}")


def _check_unicode(text: str, name: str, where: str) -> None:
    """JSON can spell lone UTF-16 surrogates (``"\\ud800"``) that are no Unicode text: tokenizers fail on them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _fail(where, name, f"lone surrogate {text[err.start]!r} at position {err.start}: not valid Unicode "
                                 "text (a broken escape in the JSON)") from None


def _text_list(row: dict[str, Any], name: str, where: str, required: bool) -> list[str]:
    if name not in row:
        if required:
            raise _fail(where, name, "missing")
        return []
    value = row[name]
    if not isinstance(value, list):
        raise _fail(where, name, f"must be a list of strings, got {type(value).__name__}")
    if required and not value:
        raise _fail(where, name, "empty list: at least one positive is needed")
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise _fail(where, f"{name}[{i}]", f"must be a string, got {type(text).__name__}")
        if not text.strip():
            raise _fail(where, f"{name}[{i}]", "empty string")
        _check_unicode(text, f"{name}[{i}]", where)
    return value


def _scores(row: dict[str, Any], name: str, expected: int, where: str) -> Optional[list[float]]:
    if row.get(name) is None:
        return None
    value = row[name]
    if not isinstance(value, list) or len(value) != expected:
        raise _fail(where, name, f"must be a list of {expected} numbers (one per {name.split('_')[0]})")
    for i, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise _fail(where, f"{name}[{i}]", f"must be a finite number, got {s!r}")
    return [float(s) for s in value]


def validate_row(row: Any, where: str, label_table: bool = False) -> Example:
    """Check one decoded row; ``where`` is ``path:line`` for messages. ``label_table``: a (text, label) table row,
    whose positives come later from its label (``pos`` stays empty until ``trainer.data.labels`` pairs it)."""
    if not isinstance(row, dict):
        raise _fail(where, "row", f"must be a JSON object, got {type(row).__name__}")
    unknown = set(row) - KNOWN_FIELDS
    if unknown:
        raise _fail(where, sorted(unknown)[0], f"unknown field (known: {', '.join(sorted(KNOWN_FIELDS))})")
    if "query" not in row:
        raise _fail(where, "query", "missing")
    if not isinstance(row["query"], str):
        raise _fail(where, "query", f"must be a string, got {type(row['query']).__name__}")
    if not row["query"].strip():
        raise _fail(where, "query", "empty string")
    _check_unicode(row["query"], "query", where)
    if label_table and row.get("label") is None:
        raise _fail(where, "label", "empty: a (text, label) table row needs its label")
    pos = _text_list(row, "pos", where, required=not label_table)
    neg = _text_list(row, "neg", where, required=False)
    clash = set(pos) & set(neg)
    if clash:
        raise _fail(where, "neg", f"a negative equals a positive: {next(iter(clash))[:60]!r}")
    if row.get("label") is not None:
        label = row["label"]
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise _fail(where, "label", f"must be a string or an integer, got {type(label).__name__}")
        if isinstance(label, str) and not label.strip():
            raise _fail(where, "label", "empty string")
    for name in ("task", "instruction"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise _fail(where, name, f"must be a string, got {type(row[name]).__name__}")
        if row.get(name) is not None:
            _check_unicode(row[name], name, where)
    return Example(query=row["query"], pos=list(pos), neg=list(neg), task=row.get("task"),
                   instruction=row.get("instruction") or None,
                   label=None if row.get("label") is None else str(row["label"]),
                   pos_scores=_scores(row, "pos_scores", len(pos), where),
                   neg_scores=_scores(row, "neg_scores", len(neg), where))


@dataclass
class LoadReport:
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)  # field -> count
    first_errors: list[str] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)  # unknown field -> rows that carried it
    ignored_first: dict[str, str] = field(default_factory=dict)  # unknown field -> where it was first seen
    sources: list[tuple[str, int]] = field(default_factory=list)  # (source, rows it contributed), in order
    notes: list[str] = field(default_factory=list)  # what the load did to rows as a whole (label tables)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def ignore(self, names: Iterable[str], where: str) -> None:
        """Count fields no format knows (reported once in the summary, not per row)."""
        for name in names:
            self.ignored[name] += 1
            self.ignored_first.setdefault(name, where)

    def record(self, err: DataError) -> None:
        name = str(err).split(": ")[1] if ": " in str(err) else "row"
        self.skipped[name.split("[")[0]] += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(str(err))

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        text = f"{self.rows} rows loaded, {skipped} skipped"
        if skipped:
            text += f" ({dict(self.skipped)}); first: {self.first_errors[0]}"
        if self.ignored:
            text += "; unknown fields ignored: " + ", ".join(
                f"{name} ({count} rows, first at {self.ignored_first[name]})" for name, count in self.ignored.items())
        for note in self.notes:
            text += f"; {note}"
        if len(self.sources) > 1:
            text += "; per source: " + ", ".join(f"{name} {rows}" for name, rows in self.sources)
        return text


def read_row(row: Any, where: str, columns: dict[str, str], report: LoadReport, tabular: bool = False) -> Example:
    """Map one raw record to the schema, count its unknown fields in ``report``, and validate it. ``tabular``:
    the record comes from a table (Arrow, CSV), whose absent optional columns and empty cells read as None."""
    if not isinstance(row, dict):
        return validate_row(row, where)  # reports "row: must be a JSON object"
    mapped, origin = to_schema(row, where, columns)
    if tabular:
        mapped = {k: v for k, v in mapped.items() if v is not None}
    unknown = sorted(set(mapped) - KNOWN_FIELDS)
    try:
        example = validate_row({k: v for k, v in mapped.items() if k in KNOWN_FIELDS}, where,
                               label_table=not columns and label_table_text(row) is not None)
    except DataError as err:
        raise DataError(rename(str(err), where, origin)) from None
    report.ignore(unknown, where)
    return example


def iter_jsonl(path: str | Path, on_error: str = "raise", report: Optional[LoadReport] = None,
               columns: Optional[dict[str, str]] = None) -> Iterator[Example]:
    """Yield validated rows of one JSONL file (any row format, ``columns`` as ``data.columns``). Reads bytes so
    undecodable lines are reported, not replaced."""
    mapping = check_columns(columns)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be raise or skip, got {on_error!r}")
    report = report if report is not None else LoadReport()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: training file not found")
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.jsonl"))[:5]
        raise IsADirectoryError(f"{path}: a directory, not a JSONL file: list its files in data.train_files"
                                + (f" (it holds {', '.join(inside)})" if inside else " (it holds no .jsonl file)"))
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            where = f"{path}:{line_no}"
            if not raw.strip():
                continue
            try:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise _fail(where, "row", f"not valid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})")
                try:
                    # Without its line ending: a line cut off mid-object then reports the column where it ends,
                    # not column 1 of a line that does not exist.
                    row = json.loads(text.rstrip("\r\n"))
                except json.JSONDecodeError as err:
                    raise _fail(where, "row", f"invalid JSON: {err.msg} at column {err.colno}")
                example = read_row(row, where, mapping, report)
            except DataError as err:
                if on_error == "raise":
                    raise
                report.record(err)
                continue
            report.rows += 1
            yield example


def iter_records(records: Iterable[dict[str, Any]], source: str, on_error: str = "raise",
                 report: Optional[LoadReport] = None, columns: Optional[dict[str, str]] = None,
                 row_label: str = "") -> Iterator[Example]:
    """Validate already-decoded rows (Hugging Face datasets); ``where`` is ``source:N`` (``source:row N`` with
    ``row_label="row "``, for tables whose row numbers are no line numbers)."""
    report = report if report is not None else LoadReport()
    mapping = check_columns(columns)
    for i, row in enumerate(records, start=1):
        try:
            example = read_row(dict(row), f"{source}:{row_label}{i}", mapping, report, tabular=True)
        except DataError as err:
            if on_error == "raise":
                raise
            report.record(err)
            continue
        report.rows += 1
        yield example


if __name__ == "__main__":
    for file in sys.argv[1:]:
        rep = LoadReport()
        for _ in iter_jsonl(file, on_error="skip", report=rep):
            pass
        print(f"{file}: {rep.summary()}")

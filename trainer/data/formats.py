"""Row formats: map a raw record, as people have it, onto the training schema before it is validated.

    pytest tests/test_data_sources.py

Recognised per row, by its column names (a file may mix them only as far as its rows do):

- our schema (``query``, ``pos``, ``neg``, ...) and FlagEmbedding rows, its superset: ``prompt`` is read as the
  row's ``instruction`` (an explicit ``instruction`` wins); other FlagEmbedding fields (``type``) are ignored;
- sentence-transformers pairs and triplets: ``anchor``, ``positive``, ``negative`` / ``negative_1``..``negative_n``
  (one string each) -> ``query``, ``pos``, ``neg``; ``sentence1``/``sentence2`` without a score or label are pairs;
- anything else through ``data.columns`` (raw column -> schema field, e.g. ``{question: query, answer: pos}``): a
  string mapped to ``pos``/``neg`` becomes a one-element list, several columns mapped to one list field are joined
  in mapping order; columns the mapping does not name keep their meaning when they are schema fields.

(text, label) tables (two columns, one of them ``label``, as sentence-transformers' classification datasets) are
label tasks: each row reads as ``{"query": text, "label": label}`` with its positives still to come, and the load
(``trainer.data.labels``) pairs every text with other texts of its label. Graded pairs (``sentence1``/``sentence2``
+ ``score``/``label``) are refused with the columns seen: a retrieval trainer cannot learn from them without a
choice this module should not make silently.
Fields no format knows are ignored, counted per field in the load report (one line in its summary, not one per
row): a typo such as ``negs`` then shows in the summary instead of stopping a long load.
A bad value is reported under the column the user wrote (``anchor: empty string``), not the schema name.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from trainer.data.fields import KNOWN_FIELDS, DataError

LIST_FIELDS = ("pos", "neg")
ST_NEGATIVE = re.compile(r"^negative(?:_(\d+))?$")
FLAG_PROMPT = "prompt"  # FlagEmbedding's per-row instruction


def check_columns(columns: Optional[Mapping[str, str]]) -> dict[str, str]:
    """``data.columns`` as a plain dict; a target that is no schema field fails before any row is read."""
    if columns is not None and not isinstance(columns, Mapping):
        raise ValueError(f"data.columns={columns!r}: must be a mapping of column to schema field, e.g. "
                         "data.columns={question: query, answer: pos}")
    mapping = {str(k): str(v) for k, v in (columns or {}).items()}
    bad = {k: v for k, v in mapping.items() if v not in KNOWN_FIELDS}
    if bad:
        raw, target = next(iter(bad.items()))
        raise ValueError(f"data.columns: {raw} -> {target}: not a schema field "
                         f"(known: {', '.join(sorted(KNOWN_FIELDS))})")
    return mapping


def _add(out: dict[str, Any], origin: dict[str, list[str]], target: str, column: str, value: Any) -> None:
    """Put ``value`` of ``column`` into ``target``; list fields gather strings from several columns."""
    if target not in LIST_FIELDS:
        out[target], origin[target] = value, [column]
        return
    origin.setdefault(f"{target}*", []).append(column)  # every column of the field, for "pos: missing"
    if value is None:
        return
    if isinstance(value, list):
        out.setdefault(target, []).extend(value)
        origin.setdefault(target, []).extend(f"{column}[{j}]" for j in range(len(value)))
    else:
        out.setdefault(target, []).append(value)
        origin.setdefault(target, []).append(column)


def _mapped(row: dict[str, Any], columns: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    out: dict[str, Any] = {}
    origin: dict[str, list[str]] = {}
    for raw, target in columns.items():
        if raw in row:
            _add(out, origin, target, raw, row[raw])
    for name, value in row.items():  # schema fields the mapping leaves alone keep their meaning
        if name not in columns and name not in out:
            out[name] = value
    return out, origin


def _sentence_transformers(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    out: dict[str, Any] = {}
    origin: dict[str, list[str]] = {}
    query, positive = ("anchor", "positive") if "anchor" in row else ("sentence1", "sentence2")
    _add(out, origin, "query", query, row[query])
    if positive in row:
        _add(out, origin, "pos", positive, row[positive])
    negatives = sorted((int(m.group(1) or 0), name) for name in row if (m := ST_NEGATIVE.match(name)))
    for _, name in negatives:
        _add(out, origin, "neg", name, row[name])
    used = {query, positive} | {name for _, name in negatives}
    out.update({name: value for name, value in row.items() if name not in used})
    return out, origin


def _flag_embedding(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    out = {name: value for name, value in row.items() if name != FLAG_PROMPT}
    origin: dict[str, list[str]] = {}
    if row.get(FLAG_PROMPT) is not None and row.get("instruction") is None:
        out["instruction"], origin["instruction"] = row[FLAG_PROMPT], [FLAG_PROMPT]
    return out, origin


def label_table_text(row: dict[str, Any]) -> Optional[str]:
    """The text column of a (text, label) table row, else None."""
    if "label" in row and len(row) == 2 and not set(row) & (KNOWN_FIELDS - {"label"}):
        return next(name for name in row if name != "label")
    return None


def to_schema(row: dict[str, Any], where: str,
              columns: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """``row`` in schema field names (unknown fields still in it) and, per field, the columns it came from."""
    if columns:
        return _mapped(row, columns)
    if "query" in row:
        return _flag_embedding(row)
    if "anchor" in row:
        return _sentence_transformers(row)
    if "sentence1" in row and "sentence2" in row:
        graded = [name for name in ("score", "label") if name in row]
        if graded:
            raise DataError(f"{where}: {graded[0]}: a graded pair (columns {', '.join(row)}): sentence1/sentence2 "
                            f"with a {graded[0]} is STS/NLI data, not query -> positive pairs; keep the pairs "
                            f"that are positives and drop the {graded[0]} column, or map columns with data.columns")
        return _sentence_transformers(row)
    text = label_table_text(row)
    if text is not None:
        return {"query": row[text], "label": row["label"]}, {"query": [text], "label": ["label"]}
    if not row or set(row) & KNOWN_FIELDS:
        return _flag_embedding(row)  # our schema with a field missing: validation names it
    raise DataError(f"{where}: row: no known format (columns {', '.join(map(str, row))}): expected query/pos "
                    "(our schema, FlagEmbedding) or anchor/positive (sentence-transformers); map other columns "
                    "with data.columns={column: query, other_column: pos}")


def rename(message: str, where: str, origin: dict[str, list[str]]) -> str:
    """Name the user's column in a schema-level message (``pos[0]`` -> ``positive``) when the row was mapped."""
    head = f"{where}: "
    if not message.startswith(head) or ": " not in message[len(head):]:
        return message
    name, rest = message[len(head):].split(": ", 1)
    match = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", name)
    if not match or not {match.group(1), f"{match.group(1)}*"} & set(origin):
        return message
    sources = origin.get(match.group(1), [])
    index = None if match.group(2) is None else int(match.group(2))
    whole = origin.get(f"{match.group(1)}*", [])
    if index is not None and index < len(sources):
        column = sources[index]
    elif index is None and match.group(1) not in LIST_FIELDS:
        column = sources[0]
    elif index is None and len(whole) == 1:
        column = whole[0]  # the one column behind a list field ("positive: missing")
    else:
        column = name
    return message if column == name else f"{head}{column}: {rest} ({name} in the training schema)"

"""Parse WordNet's database files into term -> definitions rows and split them (used by data/prepare.py).

    python data/prepare.py wordnet         # writes data/build/wordnet/

Everything here is a pure function of its arguments (paths, lines, seed), so it can be unit-tested
without the CLI. Writing files is prepare.py's job.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

POS_FILES = ("noun", "verb", "adj", "adv")  # data.<pos> and index.<pos>; also the tie-break order
MAX_DEFINITIONS = 5
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # syntactic marker on adjectives: "beautiful(a)"
_QUOTED_TERM_INTRO = re.compile(r"(?:\bas in|\bphrase|\bexpression|\bterm|\be\.g\.?)$", re.IGNORECASE)


@dataclass(frozen=True)
class Synset:
    pos: str            # which file: noun, verb, adj, adv
    offset: str         # byte offset, unique within its file
    lemmas: tuple[str, ...]
    definition: str


@dataclass
class SplitStats:
    lemmas: int = 0
    moved_to_train: int = 0          # dev candidates sharing a definition with test
    train_definitions_removed: int = 0
    train_rows_emptied: int = 0
    train_capped: int = 0


def clean_lemma(word: str) -> str:
    """'Christmas_tree' -> 'christmas tree'; 'beautiful(a)' -> 'beautiful'."""
    return _ADJ_MARKER.sub("", word).replace("_", " ").strip().lower()


def definition_from_gloss(gloss: str) -> str:
    """The definition part of a gloss: everything before the first usage example.

    An example is a double quote outside parentheses that follows ';', ':' or ',' (or opens the gloss).
    Failing that, the first double quote outside parentheses starts the example unless it quotes a
    term ('as in "carrot and stick"', 'the phrase "make strides"'). Trailing ';', ':', ',' and spaces
    are stripped. For ordinary glosses this equals "text before the first '; \"'".
    """
    depth = 0
    fallback = -1
    in_term = False  # inside a quoted term such as 'the phrase "make strides"'
    for i, ch in enumerate(gloss):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == '"' and depth == 0:
            before = gloss[:i].rstrip()
            if in_term:
                in_term = False
            elif not before or before.endswith((";", ":", ",")):
                return before.rstrip(" ;:,")
            elif _QUOTED_TERM_INTRO.search(before):
                in_term = True
            elif fallback < 0:
                fallback = i
    if fallback >= 0:
        return gloss[:fallback].rstrip(" ;:,")
    return gloss.strip().rstrip(" ;:,")


def parse_data_line(line: str, pos: str) -> Synset | None:
    """One line of data.<pos>: 'offset lex_filenum ss_type w_cnt(hex) word lex_id ... | gloss'.

    Returns None for the licence header (lines starting with two spaces) and blank lines.
    """
    if not line.strip() or line.startswith("  "):
        return None
    head, sep, gloss = line.rstrip("\n").partition(" | ")
    fields = head.split()
    if len(fields) < 6:
        raise ValueError(f"malformed WordNet line: {line[:80]!r}")
    count = int(fields[3], 16)
    words = [clean_lemma(fields[4 + 2 * i]) for i in range(count)]
    definition = definition_from_gloss(gloss) if sep else ""
    return Synset(pos=pos, offset=fields[0], lemmas=tuple(words), definition=definition)


def read_synsets(wordnet_dir: Path) -> list[Synset]:
    synsets: list[Synset] = []
    for pos in POS_FILES:
        with open(wordnet_dir / f"data.{pos}", encoding="utf-8", errors="replace") as fh:
            synsets.extend(s for s in (parse_data_line(line, pos) for line in fh) if s is not None)
    return synsets


def parse_index_line(line: str) -> tuple[str, list[str]] | None:
    """One line of index.<pos>: 'lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt offsets...'.

    Returns (cleaned lemma, synset offsets in WordNet's sense order, most frequent first).
    """
    if not line.strip() or line.startswith("  "):
        return None
    fields = line.split()
    synset_cnt = int(fields[2])
    return clean_lemma(fields[0]), fields[len(fields) - synset_cnt:]


def read_sense_ranks(wordnet_dir: Path) -> dict[tuple[str, str, str], int]:
    """(pos, lemma, offset) -> sense number (0 = most frequent); empty when the index files are absent."""
    ranks: dict[tuple[str, str, str], int] = {}
    for pos in POS_FILES:
        path = wordnet_dir / f"index.{pos}"
        if not path.exists():
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            for parsed in (parse_index_line(line) for line in fh):
                if parsed:
                    lemma, offsets = parsed
                    for rank, offset in enumerate(offsets):
                        ranks.setdefault((pos, lemma, offset), rank)
    return ranks


def build_entries(synsets: Iterable[Synset], ranks: dict[tuple[str, str, str], int] | None = None,
                  max_definitions: int = MAX_DEFINITIONS, min_chars: int = 2) -> tuple[dict[str, list[str]], int]:
    """Lemma -> up to max_definitions distinct definitions, most frequent senses first.

    Senses are ordered by (sense number, noun/verb/adj/adv, offset), so a word used as noun and verb
    gets its top noun and top verb sense first. Lemmas shorter than min_chars are skipped; a lemma with
    any empty definition is dropped. Returns (entries in alphabetical order, number of lemmas dropped).
    """
    ranks = ranks or {}
    senses: dict[str, list[tuple[int, int, str, str]]] = {}
    for s in synsets:
        for lemma in dict.fromkeys(s.lemmas):
            if len(lemma) >= min_chars:
                rank = ranks.get((s.pos, lemma, s.offset), 10_000)
                senses.setdefault(lemma, []).append((rank, POS_FILES.index(s.pos), s.offset, s.definition))
    entries: dict[str, list[str]] = {}
    dropped = 0
    for lemma in sorted(senses):
        definitions = [d for *_, d in sorted(senses[lemma])]
        if any(not d for d in definitions):
            dropped += 1
            continue
        entries[lemma] = list(dict.fromkeys(definitions))[:max_definitions]
    return entries, dropped


def seeded_rank(key: str, seed: int) -> str:
    """Deterministic pseudo-random sort key; stable when other rows are added or removed."""
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8")).hexdigest()


def split_entries(entries: dict[str, list[str]], seed: int, n_test: int = 1000, n_dev: int = 1000,
                  max_train: int | None = None) -> tuple[dict[str, dict[str, list[str]]], SplitStats]:
    """Split by lemma so that no definition text appears in two splits.

    Synonyms share a gloss ("car"/"automobile"), so a plain lemma split would leak test documents into
    train. In seeded-hash order: the first n_test lemmas are test; then dev takes lemmas none of whose
    definitions is in test; everything else is train, with test/dev definitions removed from its rows
    (rows left with none are dropped). max_train keeps the first N train rows in hash order.
    """
    if n_test + n_dev >= len(entries):
        raise ValueError(f"need more than {n_test + n_dev} lemmas to split, got {len(entries)}")
    stats = SplitStats(lemmas=len(entries))
    order = sorted(entries, key=lambda lemma: seeded_rank(lemma, seed))
    test = {lemma: entries[lemma] for lemma in order[:n_test]}
    test_defs = {d for defs in test.values() for d in defs}
    dev: dict[str, list[str]] = {}
    rest: list[str] = []
    for lemma in order[n_test:]:
        if len(dev) < n_dev and not test_defs.intersection(entries[lemma]):
            dev[lemma] = entries[lemma]
            continue
        if len(dev) < n_dev:
            stats.moved_to_train += 1
        rest.append(lemma)
    held_out = test_defs | {d for defs in dev.values() for d in defs}
    train: dict[str, list[str]] = {}
    for lemma in rest:
        kept = [d for d in entries[lemma] if d not in held_out]
        stats.train_definitions_removed += len(entries[lemma]) - len(kept)
        if not kept:
            stats.train_rows_emptied += 1
        elif max_train is None or len(train) < max_train:
            train[lemma] = kept
        else:
            stats.train_capped += 1
    # Present each split alphabetically: membership depends on the hash, file order does not.
    splits = {name: dict(sorted(part.items())) for name, part in (("train", train), ("dev", dev), ("test", test))}
    return splits, stats


def training_row(lemma: str, definitions: list[str]) -> dict[str, Any]:
    return {"query": lemma, "pos": list(definitions), "neg": [], "task": "wordnet"}


def beir_split(entries: dict[str, list[str]]) -> tuple[list[dict[str, str]], list[dict[str, str]],
                                                      list[tuple[str, str, int]]]:
    """BEIR corpus (one doc per distinct definition), queries (one per lemma), qrels (every definition)."""
    doc_ids: dict[str, str] = {}
    queries: list[dict[str, str]] = []
    qrels: list[tuple[str, str, int]] = []
    for i, (lemma, definitions) in enumerate(entries.items()):
        qid = f"q{i}"
        queries.append({"_id": qid, "text": lemma})
        for definition in definitions:
            doc_id = doc_ids.setdefault(definition, f"d{len(doc_ids)}")
            qrels.append((qid, doc_id, 1))
    corpus = [{"_id": doc_id, "title": "", "text": text} for text, doc_id in doc_ids.items()]
    return corpus, queries, qrels

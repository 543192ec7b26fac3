"""Pseudo-queries from unlabeled documents: independent cropping, inverse cloze, or a user-supplied generator.

    pytest tests/test_domain.py -k pseudo

- ``crop`` (Contriever, Izacard et al. 2022): the query is a random span of the document, the positive another,
  independently drawn span (they may overlap); spans are ``query_ratio`` / ``pos_ratio`` of the words.
- ``ict`` (inverse cloze task, Lee et al. 2019): the query is one sentence (or, for a one-sentence document, a
  span); the positive is the document without it (kept in with probability ``ict_keep``).
- a generator hook (``domain.query_generator: my_pkg.module.fn``): ``fn(docs: list[str], seed: int) ->
  list[str | None]``, one query per document (None skips it), e.g. a doc2query model; the positive is the document.
Every draw comes from ``random.Random(f"{seed}:{index}")``: the same pairs on every process and every rerun.
"""
from __future__ import annotations

import random
import re
from typing import Callable, Optional, Sequence

import hydra

SENTENCE = re.compile(r"(?<=[.!?])\s+")
MODES = ("crop", "ict")


def _span(words: list[str], ratio: tuple[float, float], min_words: int, rng: random.Random) -> str:
    size = max(min(min_words, len(words)), round(rng.uniform(*ratio) * len(words)))
    start = rng.randint(0, len(words) - size)
    return " ".join(words[start:start + size])


def crop_pair(doc: str, rng: random.Random, query_ratio: tuple[float, float] = (0.1, 0.5),
              pos_ratio: tuple[float, float] = (0.5, 1.0), min_query_words: int = 3) -> tuple[str, str]:
    """(query span, positive span), drawn independently from the document's words."""
    words = doc.split()
    return _span(words, query_ratio, min_query_words, rng), _span(words, pos_ratio, min_query_words, rng)


def ict_pair(doc: str, rng: random.Random, keep: float = 0.1, min_query_words: int = 3) -> tuple[str, str]:
    """(one sentence, the document without it); a one-sentence document gives (span, rest of the words)."""
    sentences = [s for s in SENTENCE.split(doc) if s.strip()]
    if len(sentences) < 2:
        words = doc.split()
        size = max(min_query_words, len(words) // 4)
        start = rng.randint(0, max(0, len(words) - size))
        query = " ".join(words[start:start + size])
        rest = words if rng.random() < keep else words[:start] + words[start + size:]
        return query, " ".join(rest) or doc
    i = rng.randrange(len(sentences))
    rest = sentences if rng.random() < keep else sentences[:i] + sentences[i + 1:]
    return sentences[i], " ".join(rest)


def load_generator(path: Optional[str]) -> Optional[Callable[[list[str], int], Sequence[Optional[str]]]]:
    """The user's query generator from its dotted path (``package.module.function``), or None."""
    if not path:
        return None
    try:
        return hydra.utils.get_method(path)
    except Exception as err:  # noqa: BLE001 - say which setting is wrong, whatever the import error was
        raise ImportError(f"domain.query_generator={path}: cannot import it ({err})") from err


def make_pairs(docs: Sequence[str], mode: str, seed: int, generator: Optional[str] = None,
               query_ratio: Sequence[float] = (0.1, 0.5), pos_ratio: Sequence[float] = (0.5, 1.0),
               ict_keep: float = 0.1) -> list[tuple[str, str]]:
    """One (query, positive) pair per document; the generator hook, when set, overrides ``mode``."""
    hook = load_generator(generator)
    if hook is not None:
        queries = list(hook(list(docs), seed))
        if len(queries) != len(docs):
            raise ValueError(f"domain.query_generator={generator}: returned {len(queries)} queries for "
                             f"{len(docs)} documents (one per document, None to skip)")
        return [(q, d) for q, d in zip(queries, docs) if q and q.strip()]
    if mode not in MODES:
        raise ValueError(f"domain.query_mode must be one of {MODES} (or set domain.query_generator), got {mode!r}")
    pairs = []
    for i, doc in enumerate(docs):
        rng = random.Random(f"{seed}:{i}")
        if mode == "crop":
            pairs.append(crop_pair(doc, rng, tuple(query_ratio), tuple(pos_ratio)))
        else:
            pairs.append(ict_pair(doc, rng, ict_keep))
    return pairs

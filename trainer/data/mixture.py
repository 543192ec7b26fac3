"""Source mixtures (E5 / BGE style): each ``data.train_files`` entry gets a share of every epoch's rows.

    python -m trainer.train data.train_files=[big.jsonl,small.jsonl] data.source_weights=[3,1]

An epoch keeps the loaded row count N; source i contributes round(N * w_i / sum(w)) rows (largest remainders, so
the shares add up to N exactly), drawn afresh each epoch from the seed: a permutation of the source's rows, repeated
when its share exceeds them (a small source is up-sampled) and cut when it falls short (a large one is
down-sampled). The draw depends only on (seed, epoch, source), so a resumed run sees the epoch it left.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Mixture:
    names: tuple[str, ...]  # one per source, in data.train_files order
    spans: tuple[tuple[int, int], ...]  # (start, stop) of each source's rows in the loaded example list
    shares: tuple[int, ...]  # rows each source contributes to every epoch

    @classmethod
    def from_weights(cls, weights: Sequence[float], sources: Sequence[tuple[str, int]],
                     files: Optional[Sequence[str]] = None) -> "Mixture":
        """``sources``: (name, rows loaded) per source in load order (``LoadReport.sources``); ``files``: every
        configured source, so a mismatch names what was configured."""
        files = list(files) if files is not None else [name for name, _ in sources]
        weights = [float(w) for w in weights]
        if len(weights) != len(files):
            raise ValueError(f"data.source_weights has {len(weights)} entries for {len(files)} data.train_files: "
                             "give one weight per source")
        if any(w < 0 or not np.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise ValueError(f"data.source_weights={weights}: each weight must be >= 0 and at least one > 0")
        counts = [rows for _, rows in sources] + [0] * (len(files) - len(sources))  # data.max_rows may stop early
        empty = [files[i] for i, w in enumerate(weights) if w > 0 and counts[i] == 0]
        if empty:
            raise ValueError(f"data.source_weights gives {empty[0]} a share, but no row of it was loaded "
                             "(empty source, data.source_rows=0, or data.max_rows reached before it)")
        total = sum(counts)
        exact = np.array(weights) / sum(weights) * total
        shares = np.floor(exact).astype(int)
        for i in np.argsort(-(exact - shares), kind="stable")[:total - int(shares.sum())]:
            shares[i] += 1  # largest remainders
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        return cls(tuple(files), tuple((int(s), int(s + c)) for s, c in zip(starts, counts)),
                   tuple(int(s) for s in shares))

    def indices(self, seed: int, epoch: int) -> list[int]:
        """Example indices of ``epoch``'s rows, source by source (the sampler shuffles them together)."""
        out: list[int] = []
        for source, ((start, stop), share) in enumerate(zip(self.spans, self.shares)):
            size = stop - start
            if share == 0:
                continue
            rng = np.random.default_rng([seed, epoch, 11, source])
            passes = -(-share // size)  # whole permutations needed, the last one cut
            drawn = np.concatenate([rng.permutation(size) for _ in range(passes)])[:share]
            out.extend((start + drawn).tolist())
        return out

    def describe(self) -> str:
        """One line for the run's log: what each source contributes per epoch."""
        parts = []
        for name, (start, stop), share in zip(self.names, self.spans, self.shares):
            size = stop - start
            ratio = f"{share / size:.2f}x its {size} rows" if size else "no rows"
            parts.append(f"{name} {share} ({ratio})")
        return "mixture per epoch: " + ", ".join(parts)

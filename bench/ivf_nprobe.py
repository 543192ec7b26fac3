"""IVF recall and search time against nprobe, on bench/scaling.py's search vectors (run that first).

    python bench/ivf_nprobe.py            # -> bench/results/ivf_nprobe.json

Same corpus vectors, 1,000 queries and exact top-50 as the scaling run's search stage (its --work folder), the IVF
index at conf/mine/index/ivf.yaml's nlist, searched with several nprobe: what IVF needs to match HNSW's recall.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scaling_data import index_defaults, recall_at, vectors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench/cache/scaling")
    parser.add_argument("--sizes", default="300000,1000000")
    parser.add_argument("--nprobe", default="16,32,64,128,256")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ivf_nprobe.json")
    args = parser.parse_args()
    import faiss
    import numpy as np

    from trainer.mining.config import IndexConfig
    from trainer.mining.index import build_index, search

    faiss.omp_set_num_threads(args.threads)
    rows, load_before = [], os.getloadavg()
    for n in map(int, args.sizes.split(",")):
        exact_file = args.work / f"exact-{n}.npy"
        if not exact_file.exists():
            raise SystemExit(f"{exact_file} missing: run python bench/scaling.py --stages search first")
        corpus, queries, _ = vectors(args.work, n, 1000)
        exact = np.load(exact_file)
        cfg = IndexConfig(**{**index_defaults("ivf"), "use_gpu": "never"})
        started = time.perf_counter()
        index = build_index(corpus, cfg)
        build = time.perf_counter() - started
        ivf = faiss.extract_index_ivf(index)
        for nprobe in map(int, args.nprobe.split(",")):
            ivf.nprobe = nprobe
            started = time.perf_counter()
            _, ids = search(index, queries, 50, cfg.search_batch)
            rows.append({"vectors": n, "nlist": cfg.nlist, "nprobe": nprobe, "build_seconds": build,
                         "search_seconds": time.perf_counter() - started, "recall_at_10": recall_at(ids, exact, 10),
                         "recall_at_50": recall_at(ids, exact, 50)})
            print(json.dumps(rows[-1]), flush=True)
    report = {"points": rows, "threads": args.threads, "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "command": "python bench/ivf_nprobe.py"}
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

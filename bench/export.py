"""Export benchmark: texts/s of ONNX Runtime fp32 and int8 against PyTorch on CPU, MiniLM, one interleaved run.

    python bench/export.py                          # -> bench/results/export.json (run it on an idle machine)
    python bench/export.py --out runs/bench/export-look.json --rounds 2 --no-spinning   # a look on a shared machine
    python bench/export.py --quick --out runs/bench/export-quick.json   # smoke test: 96 texts, int8 scored on 100 queries

Exports the bundled all-MiniLM-L6-v2 with the real export job (``trainer.exporting.job.run_export``: ORT fusions,
int8, the check against PyTorch, int8 quality on the full-corpus news test: 500 headlines against 3,682 articles),
then encodes the same held-out news articles with four engines, interleaved batch by batch (order rotated), same
threads (one per physical core), same tokenised batches (length-sorted, batch 32, max 128 tokens), model call only:
    torch       PyTorch float32, eager (no torch.compile), the backbone's default attention (SDPA)
    torch_bf16  the same under bf16 autocast (what our encoder uses for mining where the CPU computes bf16)
    onnx_fp32   model.onnx (fused), ONNX Runtime CPU, the export's session settings
    onnx_int8   model_int8.onnx (dynamic int8, fused)
Reports the best of ``--rounds`` rounds of each. Ratios are against ``torch`` (and ``torch_bf16``). The JSON
carries the load average before and after, so numbers from a busy machine are not taken for final ones.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from trainer.config import CONF_DIR, register_configs  # noqa: E402
from trainer.evaluation.retrieval import load_beir  # noqa: E402
from trainer.exporting.graphs import MODEL, MODEL_INT8, onnx_encoder  # noqa: E402
from trainer.exporting.job import run_export  # noqa: E402
from trainer.exporting.ort_optimize import physical_cores  # noqa: E402
from trainer.models import Encoder  # noqa: E402
from trainer.models.checkpoint import save_checkpoint  # noqa: E402

N_TEXTS, BATCH, MAX_LEN = 256, 32, 128
CPU_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def cpu_info() -> dict[str, Any]:
    """Model name and the flags that decide the bf16 / int8 kernels (Linux /proc/cpuinfo)."""
    info: dict[str, Any] = {"machine": platform.machine(), "logical_cpus": os.cpu_count(),
                            "physical_cores": physical_cores()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    info.update(model=fields.get("model name", "?"), flags=[f for f in CPU_FLAGS if f in flags])
    return info


def interleaved(engines: dict[str, Callable[[dict], Any]], batches: list[dict], rounds: int) -> dict[str, list]:
    """Seconds per round of each engine; engines alternate batch by batch, the order rotating every batch."""
    seconds = {name: [0.0] * rounds for name in engines}
    names = list(engines)
    with torch.no_grad():
        for run in engines.values():
            run(batches[0]), run(batches[-1])  # warm-up: shortest and longest batch (arena, prepacking)
        for r in range(rounds):
            for b, feats in enumerate(batches):
                k = b % len(names)
                for name in names[k:] + names[:k]:
                    started = time.perf_counter()
                    engines[name](feats)
                    seconds[name][r] += time.perf_counter() - started
    return seconds


def export_and_score(work: Path, spinning: bool, quick: bool) -> tuple[Path, dict[str, Any], Any]:
    """Save the bundled MiniLM as a checkpoint (max 128 tokens), export it; returns checkpoint, report, cfg."""
    # Full: 500 headlines against all 3,682 articles. Quick: 100 headlines against the 500 test articles.
    task = ["eval.tasks.0.path=" + str(ROOT / "data/build/news/beir-test"), "eval.tasks.0.max_queries=100"] \
        if quick else [f"eval.tasks.0.path={ROOT / 'data/build/news/beir-full-test'}"]
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        model_cfg = compose(config_name="train", overrides=[f"model.max_length_passage={MAX_LEN}",
                                                            f"model.max_length_query={MAX_LEN}"]).model
        checkpoint = save_checkpoint(Encoder.from_config(model_cfg), work / "minilm", {"step": 0})
        cfg = compose(config_name="export", overrides=[
            f"checkpoint={checkpoint}", f"out={work / 'onnx'}", f"session.spinning={str(spinning).lower()}",
            *task])
    return checkpoint, run_export(cfg), cfg


def machine_busy(load_before: float, load_after: float, threads: int) -> bool:
    """Other work beside the benchmark: a 1-minute load average above half the cores before it started, or after
    it less the ``threads`` the benchmark itself kept busy (its own load is no sign of a shared machine)."""
    return load_before > 0.5 * threads or load_after - threads > 0.5 * threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/export.json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-spinning", action="store_true", help="ORT threads yield (for a shared machine)")
    parser.add_argument("--quick", action="store_true", help="smoke test: fewer texts, int8 scored on 100 queries")
    args = parser.parse_args()
    n_texts = 96 if args.quick else N_TEXTS
    threads = physical_cores()
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    checkpoint, report, cfg = export_and_score(work, not args.no_spinning, args.quick)

    encoder = Encoder.from_pretrained(str(checkpoint)).eval()
    data = load_beir(ROOT / "data/build/news/beir-full-test", "test")
    texts = sorted(data.corpus[:n_texts], key=len)  # length-sorted batches, as Encoder.encode
    batches = [encoder.tokenize(texts[i:i + BATCH], "passage") for i in range(0, len(texts), BATCH)]
    fp32, int8 = onnx_encoder(cfg, work / "onnx" / MODEL, encoder), onnx_encoder(cfg, work / "onnx" / MODEL_INT8,
                                                                                   encoder)

    def bf16(feats: dict) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return encoder(**feats)

    engines = {"torch": lambda f: encoder(**f), "torch_bf16": bf16, "onnx_fp32": fp32.run, "onnx_int8": int8.run}
    seconds = interleaved(engines, batches, args.rounds)
    rate = {name: n_texts / min(s) for name, s in seconds.items()}
    task, quality = next(iter(report["quality"].items()))
    load_after = os.getloadavg()
    busy = machine_busy(load_before[0], load_after[0], threads)
    result = {
        "onnx_ratio_vs_torch": rate["onnx_fp32"] / rate["torch"],
        "int8_ratio_vs_torch": rate["onnx_int8"] / rate["torch"],
        "max_abs_diff": report["verify"]["max_abs_diff"],
        "int8_quality_change": quality["int8_change"],
        "onnx_ratio_vs_torch_bf16": rate["onnx_fp32"] / rate["torch_bf16"],
        "int8_ratio_vs_torch_bf16": rate["onnx_int8"] / rate["torch_bf16"],
        "texts_per_s": rate, "seconds_per_round": seconds, "quality": report["quality"],
        "int8_max_abs_diff_vs_fp32": report["int8"]["max_abs_diff_vs_fp32"],
        "sentence_transformers_layout_max_abs_diff": report["sentence_transformers"]["verify"]["max_abs_diff"],
        "graph": report["graph"], "int8_settings": report["int8_settings"],
        "session": {"threads": threads, "spinning": not args.no_spinning, "graph_optimization": "all"},
        "torch_setup": {"threads": torch.get_num_threads(), "mode": "eager (no torch.compile)",
                        "attention": encoder.backbone.config._attn_implementation, "dtype": "float32 weights",
                        "torch_bf16": "torch.autocast('cpu', dtype=torch.bfloat16)"},
        "model": "all-MiniLM-L6-v2 (bundled)", "texts": f"{n_texts} held-out news articles, max {MAX_LEN} tokens",
        "mode": "quick (smoke test)" if args.quick else "full",
        "batch_size": BATCH, "rounds": args.rounds, "cpu": cpu_info(),
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__},
        "load_average_before": load_before, "load_average_after": load_after,
        "note": (("MACHINE BUSY (load average above half the cores): these numbers are not final. " if busy else "")
                 + f"One run; engines interleaved batch by batch (model call only, same tokenised batches), best of "
                 f"{args.rounds} rounds each; ratios are the comparable numbers. int8_quality_change = {task} of "
                 f"ONNX int8 minus ONNX fp32 on " + ("100 headlines against the 500 test articles (quick)."
                                                     if args.quick else "the full-corpus news test (beir-full-test: "
                 f"{len(data.queries)} headlines, {len(data.corpus)} articles).")),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".tmp-{args.out.name}")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps({k: result[k] for k in list(result)[:6]}, indent=2))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({threads} cores) -> {args.out}")


if __name__ == "__main__":
    main()

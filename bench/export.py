"""Export benchmark: texts/s of ONNX Runtime fp32 and int8 against PyTorch on CPU, MiniLM, one run.

    python bench/export.py                      # -> bench/results/export.json

Exports the bundled all-MiniLM-L6-v2 with the real export job (``trainer.exporting.job.run_export``: ONNX check
against PyTorch, int8 quality on held-out news retrieval), then encodes the same held-out news texts with the three
engines, interleaved (the machine is shared, so only ratios measured in the same rounds are
compared), batch by batch, same threads, same tokenised batches (length-sorted, batch 32, max 128 tokens), model call
only. Reports the best of 3 rounds of each.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from trainer.config import CONF_DIR, register_configs  # noqa: E402
from trainer.evaluation.retrieval import load_beir  # noqa: E402
from trainer.exporting.job import run_export  # noqa: E402
from trainer.exporting.onnx_model import OnnxEncoder  # noqa: E402
from trainer.models import Encoder  # noqa: E402
from trainer.models.checkpoint import save_checkpoint  # noqa: E402

THREADS, ROUNDS, N_TEXTS, BATCH, MAX_LEN, QUALITY_QUERIES = 2, 3, 256, 32, 128, 200


def main() -> None:
    torch.set_num_threads(THREADS)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        model_cfg = compose(config_name="train", overrides=[f"model.max_length_passage={MAX_LEN}",
                                                            f"model.max_length_query={MAX_LEN}"]).model
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    checkpoint = save_checkpoint(Encoder.from_config(model_cfg), work / "minilm", {"step": 0})
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="export", overrides=[f"checkpoint={checkpoint}", f"out={work / 'onnx'}",
                                                       f"eval.tasks.0.max_queries={QUALITY_QUERIES}"])
    report = run_export(cfg)

    encoder = Encoder.from_pretrained(str(checkpoint)).eval()
    data = load_beir(ROOT / "data/build/news/beir-test", "test")
    texts = sorted(data.corpus[:N_TEXTS], key=len)  # length-sorted batches, as Encoder.encode
    batches = [encoder.tokenize(texts[i:i + BATCH], "passage") for i in range(0, len(texts), BATCH)]
    fp32 = OnnxEncoder(work / "onnx/model.onnx", encoder, THREADS)
    int8 = OnnxEncoder(work / "onnx/model_int8.onnx", encoder, THREADS)
    engines = {"torch": lambda f: encoder(**f), "onnx_fp32": fp32.run, "onnx_int8": int8.run}
    seconds: dict[str, list[float]] = {name: [0.0] * ROUNDS for name in engines}
    with torch.no_grad():
        for run in engines.values():
            run(batches[0])  # warm-up
        # Interleaved batch by batch (order rotated), so load changes on the shared machine hit all engines alike.
        for r in range(ROUNDS):
            for b, feats in enumerate(batches):
                names = list(engines)
                for name in names[b % 3:] + names[:b % 3]:
                    started = time.perf_counter()
                    engines[name](feats)
                    seconds[name][r] += time.perf_counter() - started
    rate = {name: N_TEXTS / min(s) for name, s in seconds.items()}
    task, quality = next(iter(report["quality"].items()))
    result = {
        "onnx_ratio_vs_torch": rate["onnx_fp32"] / rate["torch"],
        "int8_ratio_vs_torch": rate["onnx_int8"] / rate["torch"],
        "max_abs_diff": report["verify"]["max_abs_diff"],
        "int8_quality_change": quality["int8_change"],
        "texts_per_s": rate, "seconds_per_round": seconds, "quality": report["quality"],
        "int8_max_abs_diff_vs_fp32": report["int8"]["max_abs_diff_vs_fp32"],
        "model": "all-MiniLM-L6-v2 (bundled)", "texts": f"{N_TEXTS} held-out news articles, max {MAX_LEN} tokens",
        "batch_size": BATCH, "threads": THREADS, "rounds": ROUNDS, "torch": torch.__version__,
        "note": (f"one run on a shared 2-core CPU; engines interleaved batch by batch (model call only, same "
                 f"tokenised batches), best of {ROUNDS} rounds each; "
                 f"ratios are the comparable numbers. int8_quality_change = {task} of ONNX int8 minus ONNX fp32 "
                 f"on {QUALITY_QUERIES} held-out news queries (beir-test, full 500-document corpus)."),
    }
    out = ROOT / "bench/results/export.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".tmp-export.json")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps({k: result[k] for k in list(result)[:5]}, indent=2))


if __name__ == "__main__":
    main()

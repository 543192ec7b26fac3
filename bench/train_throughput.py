"""Training throughput: our loop vs SentenceTransformerTrainer + MultipleNegativesRankingLoss vs the raw model.

    python bench/train_throughput.py                     # writes bench/results/train_throughput.json
    python bench/train_throughput.py --steps 12 --rounds 2

Two comparisons, each side at a named precision: at each side's defaults (what a user gets: ours
``train.mixed_precision=auto``, bf16 autocast where the hardware computes it natively; the peer float32 unless told
``bf16=True``) -> ``ratio_vs_peer_defaults``; and at the same precision (the peer with ``bf16=True`` when ours runs
bf16) -> ``ratio_vs_peer``; ``overhead_vs_raw`` against the bare model step at our precision.

Same model (all-MiniLM-L6-v2), same news headline -> article pairs, batch 32, max length 128 on both sides, same
threads. The three systems run interleaved (raw, ours, peer, raw, ours, peer, ...) so load on the machine hits
them alike; per-step times exclude each run's first ``--warmup`` steps and are medians over rounds.
"raw" is the floor: the bare transformers model on pre-tokenised batches doing forward, mean pooling, InfoNCE,
backward and an AdamW step, with no data pipeline, logging or checkpointing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from trainer.assets import minilm  # noqa: E402
from trainer.data.schema import iter_jsonl  # noqa: E402

BATCH, MAX_LEN, LR = 32, 128, 2e-5


def load_pairs(path: Path, n: int) -> list[tuple[str, str]]:
    pairs = []
    for ex in iter_jsonl(path):
        pairs.append((ex.query, ex.pos[0]))
        if len(pairs) == n:
            break
    return pairs


def run_raw(pairs: list[tuple[str, str]], steps: int, bf16: bool = False) -> list[float]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm()))
    model = AutoModel.from_pretrained(str(minilm())).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    batches = []
    for s in range(steps):
        chunk = pairs[s * BATCH:(s + 1) * BATCH]
        batches.append([tok([c[i] for c in chunk], truncation=True, max_length=MAX_LEN, padding=True,
                            return_tensors="pt") for i in (0, 1)])

    def embed(feats: dict) -> torch.Tensor:
        hidden = model(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"]).last_hidden_state
        mask = feats["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    times = []
    for q_feats, p_feats in batches:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            query, passage = embed(q_feats), embed(p_feats)
        scores = query.float() @ passage.float().T / 0.05
        loss = torch.nn.functional.cross_entropy(scores, torch.arange(scores.shape[0]))
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return times


def run_ours(train_file: Path, steps: int, workdir: Path, tag: str, precision: str = "auto") -> list[float]:
    from hydra import compose, initialize_config_dir

    from trainer.config import CONF_DIR, register_configs
    from trainer.loop import train

    register_configs()
    overrides = [f"data.train_files=[{train_file}]", f"paths.runs={workdir}", f"name=ours-{tag}",
                 f"train.batch_size={BATCH}", f"train.max_steps={steps}", "eval=none", "logger.every_n_steps=1",
                 f"model.max_length_query={MAX_LEN}", f"model.max_length_passage={MAX_LEN}", f"optim.lr={LR}",
                 "train.progress_bar=false", "train.keep_last=1", f"train.mixed_precision={precision}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    train(cfg)
    records = [json.loads(line) for line in (workdir / f"ours-{tag}" / "metrics.jsonl").read_text().splitlines()]
    # samples_per_s is measured over each logging window (one step here).
    return [BATCH / r["samples_per_s"] for r in records]


def run_peer(pairs: list[tuple[str, str]], steps: int, workdir: Path, bf16: bool = False) -> list[float]:
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    from sentence_transformers.training_args import BatchSamplers
    from transformers import TrainerCallback

    model = SentenceTransformer(str(minilm()), device="cpu")
    model.max_seq_length = MAX_LEN
    data = Dataset.from_dict({"anchor": [p[0] for p in pairs], "positive": [p[1] for p in pairs]})
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            times.append(time.perf_counter() - self.start)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(workdir / "peer"), per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=LR,
        warmup_ratio=0.1, save_strategy="no", eval_strategy="no", logging_steps=1000, report_to="none",
        dataloader_drop_last=True, batch_sampler=BatchSamplers.NO_DUPLICATES, use_cpu=True, seed=42,
        disable_tqdm=True, bf16=bf16)
    # scale 20 == temperature 0.05, our setting
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                         loss=losses.MultipleNegativesRankingLoss(model, scale=20.0),
                                         callbacks=[Timer()])
    trainer.train()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default=str(ROOT / "data/build/news/train.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "bench/results/train_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = list(os.getloadavg())
    pairs = load_pairs(Path(args.data), BATCH * args.steps)
    from trainer.loop import forget_other_precision
    from trainer.runtime import training_mixed_precision

    ours_bf16 = training_mixed_precision("auto") == "bf16"
    # name -> (runner, precision); the same-precision peer and raw step exist only when ours runs bf16.
    systems = {"raw": "float32", "ours": "bf16" if ours_bf16 else "float32", "peer": "float32"}
    if ours_bf16:
        systems.update({"raw_bf16": "bf16", "peer_bf16": "bf16"})
    per_step: dict[str, list[float]] = {name: [] for name in systems}
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.jsonl"
        train_file.write_text("".join(json.dumps({"query": q, "pos": [p]}) + "\n" for q, p in pairs))
        for r in range(args.rounds):
            for name in systems:  # interleaved: load on the machine hits every system alike
                if name.startswith("raw"):
                    times = run_raw(pairs, args.steps, bf16=name == "raw_bf16")
                elif name == "ours":
                    times = run_ours(train_file, args.steps, Path(tmp), str(r))
                else:  # the peer's Trainer builds an Accelerator too: one mixed precision per process
                    forget_other_precision("bf16" if name == "peer_bf16" else "no")
                    times = run_peer(pairs, args.steps, Path(tmp) / f"{name}-{r}", bf16=name == "peer_bf16")
                per_step[name] += times[args.warmup:]
                print(f"round {r} {name}: {statistics.median(times[args.warmup:]):.3f} s/step", flush=True)
    median = {k: statistics.median(v) for k, v in per_step.items()}
    same = "_bf16" if ours_bf16 else ""
    result = {
        "ratio_vs_peer_defaults": median["peer"] / median["ours"],  # ours/peer samples/s, each at its defaults
        "ratio_vs_peer": median["peer" + same] / median["ours"],  # at the same precision
        "overhead_vs_raw": median["ours"] / median["raw" + same] - 1,
        "precision": systems,
        "samples_per_s": {k: BATCH / v for k, v in median.items()},
        "seconds_per_step_median": median,
        "settings": {"model": "all-MiniLM-L6-v2", "batch_size": BATCH, "max_length": MAX_LEN, "steps": args.steps,
                     "warmup_steps_dropped": args.warmup, "rounds": args.rounds, "threads": args.threads,
                     "data": "news headline -> article (data/build/news/train.jsonl)",
                     "peer": "SentenceTransformerTrainer + MultipleNegativesRankingLoss(scale=20), NO_DUPLICATES",
                     "raw": "bare AutoModel forward + mean pooling + InfoNCE + backward + AdamW step"},
        "command": "python bench/train_throughput.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
        "load_average_at_start": load_at_start, "load_average_at_end": list(os.getloadavg()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Does the student follow its instructions? The same held-out texts embedded under two instructions.

    python bench/instructions.py --instruct runs/distill-instruct --plain runs/distill-plain
    python bench/instructions.py --instruct runs/distill-instruct --plain runs/distill-plain --skip-suite  # probe only
    -> bench/results/instructions.json

Reviews probe: the 1,385 held-out reviews of ``data/build/eval/probe_reviews.jsonl`` (sentiment and film of each)
embedded under the sentiment instruction (task ``movie-sentiment``) and under the movie instruction (task
``movie``); for each review its k=10 nearest other reviews (cosine), and the share of them with the review's
sentiment and with its film. An instruction-following model shows the crossover: sentiment agreement higher under
the sentiment instruction, film agreement higher under the movie instruction.
News probe: the 500 held-out article leads of ``news_outlet_clustering.jsonl`` under the outlet instruction
(``news-outlet``) and the retrieval instruction (``news``): outlet agreement of the 10 neighbours.

Every model is encoded with the instruction-tuned checkpoint's templates and instructions (the first of each
task's paraphrases), so the base student, the student distilled without instructions and the teacher see the same
texts; only the weights differ. ``crossover_sentiment`` = sentiment agreement under the sentiment instruction minus
under the movie instruction; ``crossover_movie`` = film agreement under the movie instruction minus under the
sentiment instruction; ``crossover_outlet`` likewise for outlets (outlet minus retrieval instruction).
``suite_average_*``: the mean of main scores over ``conf/eval/suite.yaml`` (every checkpoint with its own
instructions; base student and teacher without any), as ``python -m trainer.evaluate`` reports it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

PROBES = {"reviews": {"file": "probe_reviews.jsonl", "labels": ("sentiment", "movie"),
                      "tasks": ("movie-sentiment", "movie")},
          "news": {"file": "news_outlet_clustering.jsonl", "labels": ("label",), "tasks": ("news-outlet", "news")}}


def knn_agreement(emb: np.ndarray, labels: Sequence[Any], k: int = 10) -> float:
    """Mean over items of the share of its ``k`` nearest other items (dot product of the rows, i.e. cosine for
    normalised embeddings; ties broken by index) that carry its label. emb (N, D), labels (N,)."""
    labels = np.asarray(labels)
    if len(labels) <= k:
        raise ValueError(f"k={k} neighbours need more than {k} items, got {len(labels)}")
    sims = emb @ emb.T  # (N, N)
    np.fill_diagonal(sims, -np.inf)  # an item is not its own neighbour
    neighbours = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (N, k)
    return float((labels[neighbours] == labels[:, None]).mean())


def probe_numbers(by_instruction: dict[str, np.ndarray], labels: dict[str, Sequence[Any]],
                  k: int = 10) -> dict[str, float]:
    """``agreement/<label>/under/<task>`` for every (label, instruction) pair."""
    return {f"agreement/{name}/under/{task}": knn_agreement(emb, values, k)
            for task, emb in by_instruction.items() for name, values in labels.items()}


def crossovers(numbers: dict[str, float]) -> dict[str, float]:
    """``crossover_sentiment``, ``crossover_movie`` and ``crossover_outlet`` from one model's ``probe_numbers``."""
    a = numbers
    out = {}
    if "agreement/sentiment/under/movie-sentiment" in a:
        out["crossover_sentiment"] = (a["agreement/sentiment/under/movie-sentiment"]
                                      - a["agreement/sentiment/under/movie"])
        out["crossover_movie"] = a["agreement/movie/under/movie"] - a["agreement/movie/under/movie-sentiment"]
    if "agreement/label/under/news-outlet" in a:
        out["crossover_outlet"] = a["agreement/label/under/news-outlet"] - a["agreement/label/under/news"]
    return out


def read_rows(path: Path, limit: Optional[int]) -> list[dict[str, Any]]:
    """The file's rows, or a seeded sample of ``limit`` of them (the files are grouped by label: a prefix is not
    a fair sample)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not limit or limit >= len(rows):
        return rows
    return [rows[i] for i in sorted(random.Random(0).sample(range(len(rows)), limit))]


def last_checkpoint(path: str) -> Path:
    """A checkpoint folder, or a run folder's newest checkpoint."""
    folder = Path(path)
    if (folder / "embedstill.json").exists():
        return folder
    steps = sorted(p for p in (folder / "checkpoints").glob("step-*") if (p / "embedstill.json").exists())
    if not steps:
        raise FileNotFoundError(f"{folder}: neither a checkpoint nor a run folder with checkpoints/step-*")
    return steps[-1]


def load_with_templates(source: str | Path, prompts: Any, like: Any) -> Any:
    """The model at ``source`` encoding with ``prompts`` and the pooling/lengths of spec ``like``."""
    from trainer.models.encoder import Encoder

    encoder = Encoder.from_pretrained(str(source), dataclasses.replace(like, prompts=prompts))
    encoder.spec = dataclasses.replace(encoder.spec, prompts=prompts)  # a checkpoint's own prompts step aside
    return encoder


def run_probes(encoder: Any, data_dir: Path, k: int, limit: Optional[int], batch_size: int) -> dict[str, float]:
    numbers: dict[str, float] = {}
    for probe in PROBES.values():
        rows = read_rows(data_dir / probe["file"], limit)
        texts = [r["text"] for r in rows]
        by_instruction = {task: encoder.encode(texts, "query", task=task, batch_size=batch_size)
                          for task in probe["tasks"]}
        numbers.update(probe_numbers(by_instruction, {n: [r[n] for r in rows] for n in probe["labels"]}, k))
    return numbers


def relative_to_root(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (results name no machine's folders)."""
    for candidate in (Path(os.path.abspath(path)), Path(path).resolve()):  # as given, then with links followed
        if candidate.is_relative_to(ROOT):
            return str(candidate.relative_to(ROOT))
    return path


def suite_tasks() -> list[dict[str, Any]]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from trainer.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=["eval=suite"])
    return OmegaConf.to_container(cfg.eval.tasks, resolve=True)  # type: ignore[return-value]


def suite_average_of(source: str | Path, batch_size: int) -> dict[str, float]:
    """The suite average of one model, scored as ``python -m trainer.evaluate`` scores it (results and embedding
    cache in a temporary folder: a cache kept across runs could outlive the weights it was computed with)."""
    from trainer.evaluation.runner import evaluate_checkpoint, suite_average

    with tempfile.TemporaryDirectory(prefix="instructions-suite-") as out_dir:
        results = evaluate_checkpoint(source, suite_tasks(), out_dir, batch_size=batch_size, device="auto",
                                      allow_no_metadata=True)
    return suite_average(results)


def main(argv: Optional[list[str]] = None) -> int:
    from trainer import assets
    from trainer.models.encoder import Encoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instruct", required=True, help="instruction-tuned run or checkpoint")
    parser.add_argument("--plain", help="the same recipe without instructions (run or checkpoint)")
    parser.add_argument("--base", default=None, help="base student folder (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--teacher", default=None, help="teacher folder (default: bundled all-mpnet-base-v2)")
    parser.add_argument("--data", default=str(ROOT / "data" / "build" / "eval"))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="a seeded sample of N texts of each probe file (quick runs)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-suite", action="store_true", help="probe only, no suite averages")
    parser.add_argument("--skip-teacher", action="store_true", help="no teacher row (quick recipe comparisons)")
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=RUN",
                        help="another run or checkpoint probed the same way (repeatable), e.g. noteacher=runs/x")
    parser.add_argument("--suite-models", default=None,
                        help="comma-separated models whose suite average is scored (default: every model)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "instructions.json"))
    args = parser.parse_args(argv)

    instruct = last_checkpoint(args.instruct)
    spec = Encoder.from_pretrained(str(instruct)).spec
    models = {"base": args.base or str(assets.minilm()), "instruct": str(instruct)}
    if args.plain:
        models["plain"] = str(last_checkpoint(args.plain))
    for item in args.ablation:
        name, _, run = item.partition("=")
        if not name or not run or name in models:
            parser.error(f"--ablation {item!r}: expected NAME=RUN with a new NAME")
        models[name] = str(last_checkpoint(run))
    suite_models = set(args.suite_models.split(",")) if args.suite_models else None
    if not args.skip_teacher:
        models["teacher"] = args.teacher or str(assets.mpnet())
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    shown = {name: relative_to_root(source) for name, source in models.items()}
    report: dict[str, Any] = {"checkpoint": relative_to_root(str(instruct)), "models": shown, "probe": {}, "settings": {
        "k": args.k, "limit": args.limit, "suite_models": sorted(suite_models) if suite_models else "all", "instructions": {t: spec.prompts.instructions.get(t)
                                                           for p in PROBES.values() for t in p["tasks"]},
        "template": spec.prompts.instruction_template}}
    for name, source in models.items():
        encoder = load_with_templates(source, spec.prompts, spec)
        numbers = run_probes(encoder, Path(args.data), args.k, args.limit, args.batch_size)
        report["probe"][name] = {**numbers, **crossovers(numbers)}
        print(f"[instructions] {name}: " + ", ".join(f"{k} {v:+.4f}" for k, v in crossovers(numbers).items()))
        if not args.skip_suite and (suite_models is None or name in suite_models):
            average = suite_average_of(source, args.batch_size)
            report[f"suite_average_{name}"] = average.get("suite/average")
            report["probe"][name]["suite"] = average
    report.update({k: report["probe"]["instruct"][k] for k in ("crossover_sentiment", "crossover_movie",
                                                               "crossover_outlet")})
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["command"] = "python bench/instructions.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report["load_average_at_start"], report["load_average_at_end"] = list(load_at_start), list(os.getloadavg())
    from trainer.io import atomic_write_json

    atomic_write_json(Path(args.out), report)  # a crash mid-write never leaves half a results file
    print(f"[instructions] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

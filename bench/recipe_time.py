"""Wall time of the headline recipe from a cold teacher cache: mining, then training, as the README runs them.

    python bench/recipe_time.py                      # -> bench/results/recipe_time.json
    python bench/recipe_time.py --experiment distill # another recipe built on the mined rows
    python bench/recipe_time.py --partner "experiment=distill_instruct model.instruction_template=null train.epochs=1" \
        --weight 0.75                                # + a second student and the merge (the headline recipe)
    python bench/recipe_time.py ... --overrides train.seed=43   # the same recipe under another seed

Both commands run with every output under a fresh folder (``--work``): the teacher embeds every text again (its
cache starts empty), the mined rows go there instead of ``data/build``, and the training run's own dev evaluation
at the end is included. With ``--partner`` a second training run (its own overrides, sharing the cold cache) and
``python -m trainer.merge`` of the two final checkpoints are timed too. The machine's load averages before and
after are recorded: only a run on an otherwise idle machine measures the recipe.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = ".recipe-time"  # marks a --work folder this script made, the only kind it deletes


def timed(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {code}); see {log}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="distill_unlabeled")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "recipe-timing")
    parser.add_argument("--partner", default=None, help="overrides of a second training run merged with the first")
    parser.add_argument("--weight", type=float, default=0.75, help="the first run's weight in the merge")
    parser.add_argument("--overrides", default="", help="extra overrides for both training runs (e.g. train.seed=43)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recipe_time.json")
    args = parser.parse_args(argv)
    marker = args.work / MARKER
    if args.work.exists() and any(args.work.iterdir()) and not marker.exists():
        parser.error(f"--work {args.work} holds files this script did not write: give an empty or new folder")
    if args.work.exists():
        shutil.rmtree(args.work)  # this script's own folder (its marker says so): a cold cache every time
    args.work.mkdir(parents=True)
    marker.write_text("written by bench/recipe_time.py; removed and rewritten by its next run\n")
    mined = args.work / "mined-teacher"
    mine = [sys.executable, "-m", "trainer.mine", "mine/preset=teacher_negatives", f"out_dir={mined}",
            f"cache_dir={args.work / 'teacher-cache'}"]
    train = [sys.executable, "-m", "trainer.train", f"experiment={args.experiment}", "name=recipe",
             f"paths.runs={args.work}", f"data.train_files=[{mined / 'train.jsonl'}]", *args.overrides.split()]
    load_before = os.getloadavg()
    seconds = {"mine": timed(mine, args.work / "mine.log"), "train": timed(train, args.work / "train.log")}
    commands = [mine, train]
    if args.partner:
        partner = [sys.executable, "-m", "trainer.train", *args.partner.split(), "name=partner",
                   f"paths.runs={args.work}", *args.overrides.split()]
        seconds["train_partner"] = timed(partner, args.work / "partner.log")
        final = [json.loads((args.work / run / "DONE.json").read_text())["final_checkpoint"]
                 for run in ("recipe", "partner")]
        merge = [sys.executable, "-m", "trainer.merge", f"checkpoints=[{','.join(final)}]",
                 f"weights=[{args.weight},{round(1 - args.weight, 6)}]", f"out={args.work / 'merged'}"]
        seconds["merge"] = timed(merge, args.work / "merge.log")
        commands += [partner, merge]
    report = {
        "recipe_seconds": round(sum(seconds.values())),
        "seconds": {k: round(v) for k, v in seconds.items()},
        "commands": [" ".join(["python", *c[1:]]).replace(f"{ROOT}/", "") for c in commands],
        "eval": json.loads((args.work / "recipe" / "eval.jsonl").read_text().splitlines()[-1]),
        "note": f"{platform.machine()}, {os.cpu_count()} CPUs, default threads; load averages before "
                f"{', '.join(f'{x:.2f}' for x in load_before)}, after {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
                "; teacher cache empty at the start (mining fills it, training reuses it).",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("recipe_seconds", "seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

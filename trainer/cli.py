"""``embedstill <stage> [arguments]``: one command for every stage, each also ``python -m trainer.<stage>``.

    embedstill train experiment=demo             # = python -m trainer.train experiment=demo
    embedstill evaluate checkpoint=runs/demo/checkpoints/step-000100
    embedstill <stage> --help                    # the stage's own help
"""
from __future__ import annotations

import runpy
import sys
from typing import Optional, Sequence

# stage -> (module run as ``python -m``, one line of help)
STAGES = {
    "train": ("trainer.train", "fine-tune or distill an embedding model (Hydra: conf/train.yaml)"),
    "evaluate": ("trainer.evaluate", "score a checkpoint, watch a run, or compare runs (conf/evaluate.yaml)"),
    "mine": ("trainer.mine", "mine hard negatives for a training file (conf/mine.yaml)"),
    "export": ("trainer.export", "export a checkpoint to ONNX (fp32, int8) and check it (conf/export.yaml)"),
    "merge": ("trainer.merge", "average checkpoints of one base model into one (model soup; conf/merge.yaml)"),
    "push": ("trainer.push", "publish a checkpoint to the Hugging Face Hub (conf/push.yaml)"),
    "domain": ("trainer.domain", "adapt a model to a folder of unlabeled text (experiment=domain_adapt)"),
    "sweep": ("trainer.sweep", "rebuild a sweep's summary from its run dirs"),
    "teacher_cache": ("trainer.teacher_cache", "fill the teacher cache of a distillation config alone"),
}


def usage() -> str:
    width = max(map(len, STAGES))
    lines = [__doc__.strip().splitlines()[0], "", "stages:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in STAGES.items()]
    return "\n".join(lines + ["", "embedstill <stage> --help shows a stage's options."])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    stage, rest = args[0], args[1:]
    if stage not in STAGES:
        print(f"embedstill: unknown stage {stage!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = STAGES[stage][0]
    sys.argv = [f"embedstill {stage}", *rest]  # what the stage parses (Hydra and argparse read sys.argv)
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

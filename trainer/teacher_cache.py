"""Fill the teacher cache alone: the teacher targets of the training rows, built before any training step.

    python -m trainer.teacher_cache experiment=distill          # e.g. once before a sweep
    python -m trainer.teacher_cache experiment=distill teacher.batch_size=64

Takes the training config's overrides (``conf/train.yaml``) and writes nothing but the teacher's caches; a later
``python -m trainer.train`` with the same teacher and data reads every target from them.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.teacher_cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml, e.g. experiment=distill")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from hydra import compose, initialize_config_dir  # heavy imports after the command line is parsed

    from trainer.config import CONF_DIR, register_configs
    from trainer.teachers.targets import fill_teacher_cache

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose(config_name="train", overrides=list(args.overrides))
    fill_teacher_cache(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

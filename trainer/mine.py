"""Mine hard negatives for a training file with any encoder; writes training JSONL + report + histogram.

    python -m trainer.mine                                                     # news train, MiniLM, exact index
    python -m trainer.mine input_files='[my/train.jsonl]' corpus_file=my/corpus.jsonl out_dir=my/mined
    python -m trainer.mine model.name_or_path=runs/demo/checkpoints/step-000100   # mine with our checkpoint
    python -m trainer.mine mine/index=ivf mine/teacher=mpnet select.relative=0.9
    accelerate launch --multi_gpu --num_processes 4 -m trainer.mine ...        # sharded encoding

Returns the number of negatives selected (``report["counts"]["selected"]``).
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from trainer.config import CONF_DIR
from trainer.mining.config import register_mine_configs

register_mine_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="mine", version_base="1.3")
def main(cfg: DictConfig) -> int:
    from trainer.mining.pipeline import run  # heavy imports (faiss, torch) after Hydra parsed the command line

    report = run(cfg)
    print(f"mined {report['counts'].get('selected', 0)} negatives for {report['queries']} queries "
          f"from {report['corpus']} passages -> {report['output']}; removed: {report['removed']}")
    return int(report["counts"].get("selected", 0))


if __name__ == "__main__":
    main()
    from trainer.distributed import exit_process_group

    exit_process_group()  # under several processes: barrier, destroy, exit without the gloo teardown race

#!/bin/bash
# Hydra multirun: a grid of runs, one after the other (basic launcher), each in ${paths.runs}/<name>-sweep/<n>.
# Each job's train() returns the main eval metric; runs/<name>-sweep/multirun.yaml records the grid.
#   bash launch/multirun.sh
set -euo pipefail
python -m trainer.train -m name=grid experiment=demo \
  optim.lr=1e-5,3e-5 \
  train.batch_size=32 train.mini_batch_size=null,16 \
  loss.temperature=0.02,0.05 \
  train.max_steps=50 "$@"
# Optuna instead of a grid: python -m trainer.train -m hparams_search=lr_temperature

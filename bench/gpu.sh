#!/usr/bin/env bash
# GPU benchmark for a lent GPU machine, at most 10 minutes: bf16 + SDPA training (plain and GradCache steps),
# teacher caching, faiss-gpu search and the ONNX Runtime CUDA provider where installed -> bench/results/gpu.json.
#
#   bash bench/gpu.sh                 # from the repository root, after `make venv`
#   bash bench/gpu.sh --smoke --out runs/bench/gpu-smoke.json    # the same code on the CPU with tiny sizes (a check, no numbers)
#
# Without a GPU it says so and exits 0, leaving bench/results/gpu.json as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [[ ! -x "$PY" ]]; then
  echo "bench/gpu.sh: $PY not found: run \`make venv\` first (or set PYTHON=...)" >&2
  exit 1
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled PYTHONUNBUFFERED=1
export HF_HOME=${HF_HOME:-$PWD/.hf_home} PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [[ " $* " != *" --smoke "* ]]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  else
    echo "bench/gpu.sh: no nvidia-smi on this machine"
  fi
fi
# Hard stop at 580 s (SIGINT), killed 15 s later if still running: at most 595 s in all. The script budgets 540 s
# itself (a section that would pass it is skipped) and rewrites the JSON after every section, so a stop keeps
# what was measured.
timeout --signal=INT --kill-after=15 580 "$PY" bench/gpu.py "$@"

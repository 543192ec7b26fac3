"""Evaluation: task files and metrics per kind, the per-checkpoint runner, the run watcher, leaderboards, mteb adapter.

    python -m trainer.evaluate run_dir=runs/demo watch=true
"""

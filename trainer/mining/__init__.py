"""Hard-negative mining: FAISS search, counted selection rules, teacher false-negative filtering, a report.

    python -m trainer.mine input_files='[data/build/news/train.jsonl]' out_dir=data/build/news/mined

Submodules import FAISS and the models; import them directly (``trainer.mining.pipeline``) so this package
stays light for ``trainer.config``-level imports.
"""

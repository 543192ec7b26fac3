"""Domain adaptation from unlabeled text: pseudo-queries, teacher-mined negatives, distillation, merge.

    python -m trainer.domain experiment=domain_adapt domain.text_dir=<folder of text files>
"""

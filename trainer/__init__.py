"""embedstill: contrastive fine-tuning and teacher-student distillation of text-embedding models.

    python -m trainer.train experiment=demo
"""
__version__ = "0.1.0"

"""Prompt formatting shared by training, mining, evaluation and export.

    python -c "from trainer.models.prompts import PromptSpec; \
               print(PromptSpec(query_prefix='query: ').format('hi', 'query'))"

Queries get either a plain prefix (``query: ``) or, when an instruction is known (from the row or from the
task's entry in ``instructions``) and a template is set, ``template.format(instruction=..., text=...)``.
Passages get their prefix only. A task may list several instructions (paraphrases): the first is the task's
instruction (evaluation, export, the model card), training draws from all of them (``instruction_paraphrases``).
``symmetric_tasks`` names tasks whose two texts are of one kind (review and review): their passages are encoded
as queries, instruction included, at training and at evaluation (E5's convention for symmetric tasks).
``format`` returns the full text and the length in characters of the prompt
part, so pooling can skip prompt tokens.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional


@dataclass
class PromptSpec:
    query_prefix: str = ""
    passage_prefix: str = ""
    instruction_template: Optional[str] = None
    instructions: dict[str, str] = field(default_factory=dict)  # task -> its (first) instruction
    instruction_paraphrases: dict[str, list[str]] = field(default_factory=dict)  # task -> all, first included
    symmetric_tasks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        template = self.instruction_template
        if template is not None and not template.endswith("{text}"):
            # The prompt must be a prefix of the formatted text, so the text placeholder goes last.
            raise ValueError(f"instruction_template must end with '{{text}}', got {template!r}")

    def instruction_for(self, task: Optional[str], instruction: Optional[str] = None) -> Optional[str]:
        if instruction:
            return instruction
        if task is not None:
            return self.instructions.get(task)
        return None

    def prompt(self, side: str, instruction: Optional[str] = None) -> str:
        """The text put before ``text`` for this side (and instruction)."""
        if side == "query":
            if instruction and self.instruction_template:
                return self.instruction_template.replace("{instruction}", instruction).removesuffix("{text}")
            return self.query_prefix
        if side == "passage":
            return self.passage_prefix
        raise ValueError(f"side must be 'query' or 'passage', got {side!r}")

    def format(self, text: str, side: str, instruction: Optional[str] = None) -> tuple[str, int]:
        prompt = self.prompt(side, instruction)
        return prompt + text, len(prompt)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "PromptSpec":
        """From a model config (``instructions``: task -> one instruction or a list of paraphrases, first one
        used for evaluation) or from saved metadata (``instructions`` plus ``instruction_paraphrases``)."""
        instructions, paraphrases = split_instructions(cfg.get("instructions") or {})
        for task, texts in (cfg.get("instruction_paraphrases") or {}).items():
            paraphrases[task] = [str(t) for t in texts]
        return cls(
            query_prefix=cfg.get("query_prefix", "") or "",
            passage_prefix=cfg.get("passage_prefix", "") or "",
            instruction_template=cfg.get("instruction_template"),
            instructions=instructions,
            instruction_paraphrases=paraphrases,
            symmetric_tasks=[str(t) for t in cfg.get("symmetric_tasks") or []],
        )

    def sentence_transformers_prompts(self) -> dict[str, str]:
        """Named prompts for ``config_sentence_transformers.json``: query, passage and one per instruction."""
        prompts = {"query": self.query_prefix, "passage": self.passage_prefix, "document": self.passage_prefix}
        for task, instruction in sorted(self.instructions.items()):
            prompts[task] = self.prompt("query", instruction)
        return prompts


def split_instructions(value: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """task -> str | [str, ...]  ->  (task -> first instruction, task -> all of them for tasks listing several)."""
    first: dict[str, str] = {}
    paraphrases: dict[str, list[str]] = {}
    for task, entry in value.items():
        texts = [entry] if isinstance(entry, str) else [t for t in entry]
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"model.instructions.{task}: must be a non-empty string or a list of them, got {entry!r}")
        first[str(task)] = texts[0]
        if len(texts) > 1:
            paraphrases[str(task)] = list(texts)
    return first, paraphrases

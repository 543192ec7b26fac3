"""The model card of a checkpoint: ``README.md`` with Hub metadata, usage, prompts, scores and training config.

    python -m trainer.push checkpoint=runs/demo/checkpoints/step-000064 repo_id=ORG/NAME dry_run=true  # rewrite it

Written by ``save_checkpoint`` at every save and rewritten by ``trainer.push`` before an upload (with the scores
evaluated since). Everything is read from files: the checkpoint's ``embedstill.json``, its run's ``config.yaml``,
``<run>/eval/<checkpoint>/<task>.json`` (the evaluation CLI, the watcher, ``eval.on_save``) or else the records of
``<run>/eval.jsonl`` at the checkpoint's step. Missing pieces are said to be missing, never invented. The YAML
block is built with ``huggingface_hub.ModelCardData``, so the Hub parses it (``model-index`` for the scores).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from trainer.models.provenance import hub_dataset_ids, model_card_metadata, model_name

# Training-config sections shown in the card (those that are set).
CARD_SECTIONS = ("model", "data", "loss", "teacher", "distill", "optim", "train", "domain")
# Our eval task kinds as Hub task types (the names sentence-transformers' own cards use).
TASK_TYPES = {"retrieval": ("information-retrieval", "Information Retrieval"),
              "sts": ("semantic-similarity", "Semantic Similarity"),
              "classification": ("text-classification", "Classification"),
              "clustering": ("clustering", "Clustering"),
              "pair_classification": ("binary-classification", "Binary Classification"),
              "reranking": ("reranking", "Reranking")}
POOLING_CODE = {"mean": "emb = (hidden * mask).sum(1) / mask.sum(1)          # mean over real tokens",
                "cls": "emb = hidden[:, 0]                                   # first token ([CLS])",
                "last": "emb = hidden[:, -1]                                  # last token (left padding)"}


def find_run_dir(checkpoint: Path, metadata: dict[str, Any]) -> Optional[Path]:
    """The run that wrote the checkpoint: metadata["run"] (relative to the checkpoint, or absolute in checkpoints
    written before paths were made portable), else the folder above ``checkpoints/``."""
    candidates = [checkpoint / metadata["run"]] if isinstance(metadata.get("run"), str) else []
    if checkpoint.parent.name == "checkpoints":
        candidates.append(checkpoint.parent.parent)
    return next((c for c in candidates if (c / "config.yaml").exists()), None)


def display_path(value: Any) -> Any:
    """A config value as the card may show it: a model folder as its Hub id or name, a path under the working
    directory relative to it, any other absolute path by its last two components."""
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    path = Path(value)
    if (path / "config.json").exists() or (path / "embedstill.json").exists():
        return model_name(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return ".../" + "/".join(path.parts[-2:])


def displayed(value: Any) -> Any:
    """``display_path`` over every string of a config section."""
    if isinstance(value, dict):
        return {k: displayed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [displayed(v) for v in value]
    return display_path(value)


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged result is left out of the card; the evaluation CLI reports it
    return value if isinstance(value, dict) else None


def _result_files(run: Path, name: str, step: Any) -> list[dict[str, Any]]:
    """Scores of ``<run>/eval/<name>/<task>.json`` (MTEB layout) that succeeded for this checkpoint's step."""
    results = []
    for file in sorted((run / "eval" / name).glob("*.json")):
        record = _read_json(file)
        ours = (record or {}).get("embedstill") or {}
        if not record or ours.get("status") != "ok" or file.name == "model_meta.json":
            continue
        if isinstance(step, int) and (ours.get("model") or {}).get("step") not in (None, step):
            continue  # a result of an earlier folder of the same name
        for split, rows in (record.get("scores") or {}).items():
            scores = {k: v for k, v in (rows[0] if rows else {}).items()
                      if isinstance(v, (int, float)) and k != "main_score"}
            if scores:
                results.append({"task": record.get("task_name", file.stem), "kind": ours.get("kind", "retrieval"),
                                "split": split, "main": ours.get("main_score_name"), "scores": scores})
    return results


def _eval_log(run: Path, config: dict[str, Any], step: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """This step's and the base model's (step 0) scores from ``<run>/eval.jsonl`` (``<task>/<metric>`` keys)."""
    records = []
    if (run / "eval.jsonl").exists():
        for line in (run / "eval.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    base = next((r for r in records if r.get("step") == 0), {})
    here = next((r for r in reversed(records) if r.get("step") == step and step != 0), None)
    tasks = {t.get("name"): t for t in ((config.get("eval") or {}).get("tasks") or []) if isinstance(t, dict)}
    results = []
    for name, task in tasks.items():
        scores = {k.split("/", 1)[1]: v for k, v in (here or {}).items()
                  if k.startswith(f"{name}/") and isinstance(v, (int, float))}
        if scores:
            results.append({"task": name, "kind": task.get("kind", "retrieval"), "split": task.get("split", "test"),
                            "main": task.get("main_score"), "scores": scores})
    return results, {k: v for k, v in base.items() if "/" in k and isinstance(v, (int, float))}


def metric_name(key: str) -> str:
    """``ndcg_at_10`` -> ``nDCG@10``; ``dim64/recall_at_1`` -> ``Recall@1 (dim 64)``; others as they are."""
    prefix, _, key = key.rpartition("/")
    names = {"ndcg": "nDCG", "mrr": "MRR", "recall": "Recall", "map": "MAP", "precision": "Precision"}
    head, _, k = key.partition("_at_")
    pretty = f"{names.get(head, head)}@{k}" if k else key.replace("_", " ").capitalize()
    return f"{pretty} ({prefix.replace('dim', 'dim ')})" if prefix else pretty


def _eval_results(results: list[dict[str, Any]]) -> list[Any]:
    from huggingface_hub import EvalResult

    out = []
    for r in results:
        task_type, task_name = TASK_TYPES.get(r["kind"], (r["kind"], r["kind"]))
        for key, value in r["scores"].items():
            out.append(EvalResult(task_type=task_type, task_name=task_name, dataset_type=r["task"],
                                  dataset_name=r["task"], dataset_split=r["split"], metric_type=key,
                                  metric_value=float(value), metric_name=metric_name(key)))
    return out


def _tags(meta: dict[str, Any], config: dict[str, Any]) -> list[str]:
    tags = ["sentence-transformers", "sentence-similarity", "feature-extraction", "text-embeddings", "embedstill"]
    distill = config.get("distill") or {}
    if config.get("teacher") or any(isinstance(v, (int, float)) and v for k, v in distill.items() if "weight" in k):
        tags.append("distillation")
    if meta.get("lora"):
        tags.append("lora")
    if (config.get("loss") or {}).get("matryoshka_dims"):
        tags.append("matryoshka")
    if (config.get("data") or {}).get("num_negatives"):
        tags.append("hard-negatives")
    return tags


def card_data(meta: dict[str, Any], config: dict[str, Any], results: list[dict[str, Any]], name: str) -> Any:
    """The card's YAML metadata (``huggingface_hub.ModelCardData``)."""
    from huggingface_hub import ModelCardData

    base = meta.get("base_model")
    base_card = model_card_metadata(base) if base else {}
    return ModelCardData(
        language=base_card.get("language"), license=base_card.get("license"), library_name="sentence-transformers",
        pipeline_tag="sentence-similarity", base_model=base, tags=_tags(meta, config),
        datasets=hub_dataset_ids(config.get("data") or {}) or None,
        model_name=name, eval_results=_eval_results(results) or None)


def _local_ref(location: Path) -> str:
    """How the usage code names an unpublished checkpoint: its path from the working directory, else its name."""
    try:
        return str(location.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return location.name


def _cell(text: str) -> str:
    return f"`{text!r}`".replace("|", "\\|")


def _usage(meta: dict[str, Any], ref: str) -> list[str]:
    enc = meta["encoder"]
    prompts = enc.get("prompts") or {}
    q_len, p_len = enc.get("max_length_query"), enc.get("max_length_passage")
    qp, pp = prompts.get("query_prefix", ""), prompts.get("passage_prefix", "")
    tasks = sorted(prompts.get("instructions") or {})
    normalize = "F.normalize(emb, dim=-1)" if enc.get("normalize") else "emb"
    lines = ["## Usage", "", "### sentence-transformers", "", "```bash", 'pip install "sentence-transformers>=6.2"',
             "```", "", "```python", "from sentence_transformers import SentenceTransformer", "",
             f'model = SentenceTransformer("{ref}")',
             'queries = ["how do vaccines train the immune system?"]',
             'documents = ["Vaccines expose the body to a harmless piece of a pathogen so it learns to fight it."]',
             f'query_embeddings = model.encode_query(queries)           # prompt "query", at most {q_len} tokens',
             f'document_embeddings = model.encode_document(documents)   # prompt "document", at most {p_len} tokens',
             "print(model.similarity(query_embeddings, document_embeddings))"]
    if tasks:
        lines.append(f'task_queries = model.encode_query(queries, prompt_name="{tasks[0]}")  # with the instruction '
                     f'for task "{tasks[0]}"')
    lines += ["```", "",
              "`encode_query` and `encode_document` apply the prompts and the per-side lengths the model was trained "
              f'with. `model.encode(texts, prompt_name="query")` applies the same prompt but truncates at '
              f"`max_seq_length` ({p_len} tokens, the passage length).", "",
              "### transformers", "", "```python", "import torch", "import torch.nn.functional as F",
              "from transformers import AutoModel, AutoTokenizer", "",
              f'tokenizer = AutoTokenizer.from_pretrained("{ref}")',
              f'model = AutoModel.from_pretrained("{ref}").eval()', "", "",
              "def embed(texts, prompt, max_length):"]
    if enc.get("append_eos"):
        lines += ["    ids = tokenizer([prompt + t for t in texts], truncation=True, max_length=max_length - 1)"
                  "[\"input_ids\"]",
                  "    batch = tokenizer.pad({\"input_ids\": [x + [tokenizer.eos_token_id] for x in ids]}, "
                  "return_tensors=\"pt\")  # EOS appended, as in training"]
    else:
        lines.append("    batch = tokenizer([prompt + t for t in texts], padding=True, truncation=True, "
                     "max_length=max_length, return_tensors=\"pt\")")
    lines += ["    with torch.no_grad():", "        hidden = model(**batch).last_hidden_state   # (batch, tokens, dim)",
              "    mask = batch[\"attention_mask\"].unsqueeze(-1).to(hidden.dtype)",
              f"    {POOLING_CODE.get(enc.get('pooling'), POOLING_CODE['mean'])}", f"    return {normalize}", "", "",
              f"scores = embed(queries, {qp!r}, {q_len}) @ embed(documents, {pp!r}, {p_len}).T", "```", ""]
    if enc.get("exclude_prompt_from_pooling"):
        lines += ["Mean pooling leaves out the prompt's tokens (sentence-transformers does so by itself, "
                  "`include_prompt: false`); with plain transformers, zero `mask` over them.", ""]
    lines += ["### embedstill", "", "```python", "from trainer.models import Encoder", "",
              f'encoder = Encoder.from_pretrained("{ref}")   # prompts, pooling and lengths from embedstill.json',
              'query_embeddings = encoder.encode(queries, side="query")', "```", ""]
    return lines


def _prompts_section(meta: dict[str, Any]) -> list[str]:
    enc = meta["encoder"]
    prompts = enc.get("prompts") or {}
    q_len, p_len = enc.get("max_length_query"), enc.get("max_length_passage")
    lines = ["## Prompts and lengths", "", "| texts | sentence-transformers | prompt | max tokens |",
             "|---|---|---|---|",
             f"| queries | `encode_query` (`prompt_name=\"query\"`) | {_cell(prompts.get('query_prefix', ''))} "
             f"| {q_len} |",
             f"| passages | `encode_document` (`prompt_name=\"document\"` or `\"passage\"`) "
             f"| {_cell(prompts.get('passage_prefix', ''))} | {p_len} |"]
    template = prompts.get("instruction_template")
    for task, instruction in sorted((prompts.get("instructions") or {}).items()):
        prompt = template.replace("{instruction}", instruction).removesuffix("{text}") if template else ""
        lines.append(f"| queries of task `{task}` | `encode_query(..., prompt_name=\"{task}\")` | {_cell(prompt)} "
                     f"| {q_len} |")
    lines += ["", f"Pooling: {enc.get('pooling')}; L2-normalised: {enc.get('normalize')} (similarity: "
              f"{'cosine' if enc.get('normalize') else 'dot product'}); prompt tokens left out of pooling: "
              f"{enc.get('exclude_prompt_from_pooling', False)}."]
    if template:
        lines.append(f"Another instruction: `prompt={template!r}` with `{{instruction}}` filled in and `{{text}}` "
                     "left out.")
    return lines + [""]


def _instructions_section(meta: dict[str, Any], ref: str) -> list[str]:
    """The instructions the model was trained with, per task, and a call with one of them (instruction models)."""
    prompts = meta["encoder"].get("prompts") or {}
    template, instructions = prompts.get("instruction_template"), prompts.get("instructions") or {}
    if not template or not instructions:
        return []
    paraphrases, symmetric = prompts.get("instruction_paraphrases") or {}, set(prompts.get("symmetric_tasks") or [])
    lines = ["## Instructions", "",
             "One text is embedded differently per task: put the task's instruction before it. The first instruction "
             "of each task is the one its prompt name carries and evaluation used; training also drew from the "
             "others (paraphrases). Tasks marked *both sides* embed both texts (e.g. two reviews) with the "
             "instruction; the others embed only the query with it and documents with the document prompt.", "",
             "| task | instruction | paraphrases also trained with | both sides |", "|---|---|---|---|"]
    for task, first in sorted(instructions.items()):
        others = "; ".join(_cell(t) for t in (paraphrases.get(task) or [first])[1:]) or "-"
        lines.append(f"| `{task}` | {_cell(first)} | {others} | {'yes' if task in symmetric else 'no'} |")
    task = sorted(symmetric & set(instructions))[0] if symmetric & set(instructions) else sorted(instructions)[0]
    prompt = template.replace("{instruction}", instructions[task]).removesuffix("{text}")
    lines += ["", "```python", "from sentence_transformers import SentenceTransformer", "",
              f'model = SentenceTransformer("{ref}")',
              'texts = ["A comic gem with some serious sparkles.", "A tedious, joyless two hours."]',
              f"embeddings = model.encode(texts, prompt={prompt!r})",
              f'# the same as model.encode_query(texts, prompt_name="{task}")', "```", ""]
    return lines


def _scores_section(results: list[dict[str, Any]], base: dict[str, float], step: Any) -> list[str]:
    lines = ["## Evaluation", ""]
    if not results:
        return lines + [f"No evaluation results for this checkpoint (step {step}) were found in its run. Evaluate it "
                        "with `python -m trainer.evaluate checkpoint=...`; `python -m trainer.push` rewrites this card "
                        "with the scores before it uploads.", ""]
    lines += [f"| task | kind | split | metric | base model | step {step} |", "|---|---|---|---|---|---|"]
    for r in results:
        keys = sorted(r["scores"], key=lambda k: (k != r.get("main"), "/" in k, k))  # main score first
        for key in keys:
            before = base.get(f"{r['task']}/{key}")
            lines.append(f"| {r['task']} | {r['kind']} | {r['split']} | {metric_name(key)} | "
                         f"{'-' if before is None else f'{before:.4f}'} | {r['scores'][key]:.4f} |")
    return lines + ["", "The base model's column is the run's evaluation before training (`eval.jsonl`, step 0), "
                        "where it was run.", ""]


def _training_section(meta: dict[str, Any], config: dict[str, Any], run: Optional[Path]) -> list[str]:
    lines = ["## Training", ""]
    base = meta.get("base_model")
    base_text = (f"[{base}](https://huggingface.co/{base})" if base
                 else f"a local model folder `{meta.get('base_model_name', 'unknown')}` (no Hub id known)")
    lines.append(f"Base model: {base_text}. This checkpoint: step {meta.get('step', '?')}"
                 f"{' (the last of its run)' if meta.get('final') else ''}, config hash "
                 f"`{meta.get('config_hash', '?')}`.")
    if meta.get("merged"):
        merged = meta["merged"]
        lines.append(f"Weights: the base model and `{merged.get('adapted')}` merged with ratio {merged.get('ratio')}.")
    if meta.get("lora"):
        lora = meta["lora"]
        lines.append(f"LoRA (r={lora.get('r')}, alpha={lora.get('alpha')}) merged into the weights; the adapter alone "
                     f"is in `{lora.get('adapter', 'adapter')}/`.")
    lines.append("")
    if run is None:
        return lines + ["The run dir of this checkpoint was not found: no training config to show.", ""]
    data = config.get("data") or {}
    files = ", ".join(f"`{display_path(f)}`" for f in data.get("train_files") or [])
    hub = hub_dataset_ids(data)
    lines.append(f"Training data: {files or 'see the config below'}"
                 + (f" (Hub: {', '.join(f'[{d}](https://huggingface.co/datasets/{d})' for d in hub)})" if hub else "")
                 + f"; {data.get('num_negatives', 0)} hard negatives per query.")
    teacher = config.get("teacher")
    if isinstance(teacher, dict) and teacher.get("name_or_path"):
        lines.append(f"Teacher: `{display_path(teacher['name_or_path'])}`.")
    shown = {k: displayed(config[k]) for k in CARD_SECTIONS if config.get(k) is not None}
    return lines + ["", "Training config:", "", "```yaml", yaml.safe_dump(shown, sort_keys=False).rstrip(), "```", ""]


def model_card(folder: Path, location: Optional[Path] = None, repo_id: Optional[str] = None) -> str:
    """The card's text for the checkpoint in ``folder``; ``location`` is where it lives (or will, once renamed),
    ``repo_id`` the Hub repository it is published to (the usage code names it)."""
    from trainer.models.encoder import read_metadata  # torch and transformers only when a card is written

    folder = Path(folder)
    location = Path(location) if location is not None else folder
    meta = read_metadata(folder)
    run = find_run_dir(location, meta)
    config: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    base: dict[str, float] = {}
    if run is not None:
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
        logged, base = _eval_log(run, config, meta.get("step"))
        results = _result_files(run, location.name, meta.get("step")) or logged
    step_name = f"step {meta['step']}" if isinstance(meta.get("step"), int) else location.name
    name = repo_id.split("/")[-1] if repo_id else f"{run.name if run else location.name} ({step_name})"
    data = card_data(meta, config, results, name)
    enc = meta["encoder"]
    intro = (f"A text-embedding model: {meta.get('architecture', '?')}, {meta.get('dim', '?')}-d, "
             f"{enc.get('pooling')} pooling{', L2-normalised' if enc.get('normalize') else ''}, fine-tuned with "
             "embedstill (contrastive training"
             f"{' and distillation' if 'distillation' in (data.tags or []) else ''}) from "
             f"{meta.get('base_model') or meta.get('base_model_name', 'an unknown base model')}. It loads in "
             "sentence-transformers and transformers; queries and passages get their own prompts and lengths.")
    lines = ["---", data.to_yaml(), "---", "", f"# {name}", "", intro, "",
             *_usage(meta, repo_id or _local_ref(location)), *_prompts_section(meta),
             *_instructions_section(meta, repo_id or _local_ref(location)),
             *_scores_section(results, base, meta.get("step")), *_training_section(meta, config, run)]
    if data.license:
        lines += ["## License", "", f"{data.license}, the license of the base model.", ""]
    return "\n".join(lines)


def write_model_card(folder: Path, location: Optional[Path] = None, repo_id: Optional[str] = None) -> Path:
    """Write ``<folder>/README.md`` (a temporary file renamed over the old card: never half written)."""
    path = Path(folder) / "README.md"
    tmp = path.with_name(".tmp-README.md")
    tmp.write_text(model_card(folder, location, repo_id), encoding="utf-8")
    os.replace(tmp, path)
    return path

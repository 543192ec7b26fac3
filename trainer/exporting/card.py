"""Model card (README.md of an exported folder) from the checkpoint's metadata and its run dir.

    python -m trainer.export checkpoint=runs/demo/checkpoints/step-000090   # writes <out>/README.md

Everything in the card is read from files: ``embedstill.json`` (pooling, prompts, base model, step), the run
dir's ``config.yaml`` (training config, data) and ``eval.jsonl`` (scores before/after), and the export report
(ONNX check, int8 quality). Missing pieces are said to be missing, never invented.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import yaml

# Training-config sections shown in the card (those that are set).
CARD_SECTIONS = ("model", "data", "loss", "teacher", "distill", "optim", "train", "domain")


def find_run_dir(checkpoint: Path, metadata: dict[str, Any]) -> Optional[Path]:
    """The run that wrote the checkpoint: metadata["run"], else the folder above ``checkpoints/``."""
    candidates = [Path(metadata["run"])] if metadata.get("run") else []
    if checkpoint.parent.name == "checkpoints":
        candidates.append(checkpoint.parent.parent)
    return next((c for c in candidates if (c / "config.yaml").exists()), None)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _scores_table(evals: list[dict[str, Any]]) -> list[str]:
    if not evals:
        return ["No evaluation records in the run dir (eval.jsonl)."]
    first, last = evals[0], evals[-1]
    keys = [k for k in last if "/" in k]
    lines = [f"Retrieval scores from the run's `eval.jsonl` (step {first.get('step')} and step {last.get('step')}):",
             "", f"| metric | step {first.get('step')} | step {last.get('step')} |", "|---|---|---|"]
    for key in keys:
        before = f"{first[key]:.4f}" if key in first and first is not last else "-"
        lines.append(f"| {key} | {before} | {last[key]:.4f} |")
    return lines


def _prompts(encoder: dict[str, Any]) -> list[str]:
    prompts = encoder.get("prompts", {})
    lines = [f"- query prefix: `{prompts.get('query_prefix', '')!r}`",
             f"- passage prefix: `{prompts.get('passage_prefix', '')!r}`"]
    if prompts.get("instruction_template"):
        lines.append(f"- instruction template: `{prompts['instruction_template']!r}`")
    for task, text in sorted((prompts.get("instructions") or {}).items()):
        lines.append(f"- instruction for task `{task}`: `{text!r}`")
    lines.append(f"- prompt tokens excluded from pooling: {encoder.get('exclude_prompt_from_pooling', False)}")
    return lines


def model_card(checkpoint: Path, metadata: dict[str, Any], report: dict[str, Any]) -> str:
    """The card's markdown text."""
    enc = metadata["encoder"]
    run = find_run_dir(checkpoint, metadata)
    name = checkpoint.parent.parent.name if checkpoint.parent.name == "checkpoints" else checkpoint.name
    lines = [f"# {name} (ONNX)", "",
             f"Text-embedding model fine-tuned with embedstill from `{metadata.get('base_model', 'unknown')}` "
             f"({metadata.get('architecture', '?')}, {metadata.get('dim', '?')}-d), exported from `{checkpoint}` "
             f"(step {metadata.get('step', '?')}, config hash `{metadata.get('config_hash', '?')}`).", "",
             "## Files", "",
             "- `model.onnx`: inputs " + ", ".join(f"`{n}`" for n in report["inputs"]) +
             " (int64, batch x sequence, both dynamic); output `sentence_embedding` (batch x dim, float32)"
             + (", L2-normalised" if enc.get("normalize") else "") + f"; {enc.get('pooling')} pooling inside.",
             *(["- `model_int8.onnx`: the same graph, weights dynamically quantised to int8."]
               if report.get("int8") else []),
             "- tokenizer files and `embedstill.json` (pooling, prompts, max lengths).", "",
             "## Encoding", "",
             f"- pooling: {enc.get('pooling')}; normalised: {enc.get('normalize')}",
             f"- max length: query {enc.get('max_length_query')} tokens, passage {enc.get('max_length_passage')}",
             *_prompts(enc), "",
             "Queries and passages must get these prefixes before tokenisation (the graph starts at token ids).", ""]
    lines += ["## Export check", "",
              f"ONNX Runtime vs PyTorch max abs diff: {report['verify']['max_abs_diff']:.2e} over "
              f"{len(report['verify']['checked'])} batches (tolerance {report['verify']['tolerance']:g})."]
    if report.get("quality"):
        lines += ["", "| task metric | PyTorch | ONNX fp32 | ONNX int8 | int8 change |", "|---|---|---|---|---|"]
        for key, q in report["quality"].items():
            lines.append(f"| {key} | {q['torch']:.4f} | {q['onnx_fp32']:.4f} | {q['onnx_int8']:.4f} "
                         f"| {q['int8_change']:+.4f} |")
    lines += ["", "## Training", ""]
    if run is None:
        lines.append("The run dir of this checkpoint was not found: no training config or scores to show.")
    else:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
        data = config.get("data", {})
        lines += [f"Run dir: `{run}`.", "", f"Training data: {', '.join(map(str, data.get('train_files', [])))} "
                  f"({data.get('num_negatives', 0)} hard negatives per query).", "",
                  *_scores_table(_read_jsonl(run / "eval.jsonl")), "", "Training config:", "", "```yaml",
                  yaml.safe_dump({k: config[k] for k in CARD_SECTIONS if config.get(k) is not None},
                                 sort_keys=False).rstrip(),
                  "```"]
    lines += ["", "## Usage", "", "```python", "import onnxruntime as ort",
              "from transformers import AutoTokenizer", "tok = AutoTokenizer.from_pretrained(folder)",
              "sess = ort.InferenceSession(f'{folder}/model.onnx')",
              f"feats = tok([{enc.get('prompts', {}).get('query_prefix', '')!r} + 'a query'], return_tensors='np', "
              "padding=True, truncation=True)",
              "emb = sess.run(None, {n.name: feats[n.name] for n in sess.get_inputs()})[0]", "```", ""]
    return "\n".join(lines)

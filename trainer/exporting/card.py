"""Model card (README.md of an exported folder) from the checkpoint's metadata and its run dir.

    python -m trainer.export checkpoint=runs/demo/checkpoints/step-000090   # writes <out>/README.md

Everything in the card is read from files: ``embedstill.json`` (pooling, prompts, base model, step), the run
dir's ``config.yaml`` (training config, data) and ``eval.jsonl`` (scores before/after), and the export report
(ONNX check, int8 quality). Missing pieces are said to be missing, never invented. The YAML block on top carries
the Hub metadata (base model as a Hub id when known, tags), and no path of the machine that exported it is shown
(``trainer/models/card.py`` shares the rules with the checkpoint's own card).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from trainer.models.card import CARD_SECTIONS, displayed, display_path, find_run_dir
from trainer.models.provenance import model_card_metadata

__all__ = ["find_run_dir", "front_matter", "model_card"]


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


def front_matter(metadata: dict[str, Any]) -> str:
    """The Hub metadata block of an ONNX export's card."""
    from huggingface_hub import ModelCardData

    base = metadata.get("base_model")
    license_ = model_card_metadata(base).get("license") if base else None
    data = ModelCardData(base_model=base, license=license_, pipeline_tag="sentence-similarity",
                         tags=["onnx", "sentence-similarity", "feature-extraction", "text-embeddings", "embedstill"])
    return f"---\n{data.to_yaml()}\n---\n"


def model_card(checkpoint: Path, metadata: dict[str, Any], report: dict[str, Any]) -> str:
    """The card's markdown text."""
    enc = metadata["encoder"]
    run = find_run_dir(checkpoint, metadata)
    name = checkpoint.parent.parent.name if checkpoint.parent.name == "checkpoints" else checkpoint.name
    base = display_path(metadata.get("base_model") or metadata.get("base_model_name") or "unknown")
    lines = [front_matter(metadata), f"# {name} (ONNX)", "",
             f"Text-embedding model fine-tuned with embedstill from `{base}` "
             f"({metadata.get('architecture', '?')}, {metadata.get('dim', '?')}-d), exported from checkpoint "
             f"`{checkpoint.name}` (step {metadata.get('step', '?')}, config hash "
             f"`{metadata.get('config_hash', '?')}`).", "",
             "## Files", "",
             "- `model.onnx`: inputs " + ", ".join(f"`{n}`" for n in report["inputs"]) +
             " (int64, batch x sequence, both dynamic); output `sentence_embedding` (batch x dim, float32)"
             + (", L2-normalised" if enc.get("normalize") else "") + f"; {enc.get('pooling')} pooling inside.",
             *(["- `model_int8.onnx`: the same graph, weights dynamically quantised to int8."]
               if report.get("int8") else []),
             *(["- `sentence-transformers/`: the model for sentence-transformers' ONNX backend, "
                "`SentenceTransformer(\"<this folder>/sentence-transformers\", backend=\"onnx\")` "
                "(int8: `model_kwargs={\"file_name\": \"model_qint8_avx512_vnni.onnx\"}`)."]
               if report.get("sentence_transformers") else []),
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
        lines += [f"Run: `{run.resolve().name}`.", "",
                  f"Training data: {', '.join(str(display_path(f)) for f in data.get('train_files', []))} "
                  f"({data.get('num_negatives', 0)} hard negatives per query).", "",
                  *_scores_table(_read_jsonl(run / "eval.jsonl")), "", "Training config:", "", "```yaml",
                  yaml.safe_dump({k: displayed(config[k]) for k in CARD_SECTIONS if config.get(k) is not None},
                                 sort_keys=False).rstrip(),
                  "```"]
    lines += ["", "## Usage", "", "```python", "import onnxruntime as ort",
              "from transformers import AutoTokenizer", "tok = AutoTokenizer.from_pretrained(folder)",
              "sess = ort.InferenceSession(f'{folder}/model.onnx')",
              f"feats = tok([{enc.get('prompts', {}).get('query_prefix', '')!r} + 'a query'], return_tensors='np', "
              "padding=True, truncation=True)",
              "emb = sess.run(None, {n.name: feats[n.name] for n in sess.get_inputs()})[0]", "```", ""]
    return "\n".join(lines)

"""Publishing a checkpoint to the Hugging Face Hub: card rewritten, folder checked, repository created, uploaded.

    python -m trainer.push checkpoint=runs/demo/checkpoints/step-000064 repo_id=ORG/NAME
    python -m trainer.push checkpoint=... repo_id=ORG/NAME private=false revision=v1 commit_message="..."
    python -m trainer.push checkpoint=... repo_id=ORG/NAME dry_run=true     # card and checks only: nothing is sent

The token is ``huggingface_hub``'s own: ``$HF_TOKEN``, else the one ``hf auth login`` stored. It is never taken on
the command line (Hydra would keep it in its config), never printed and never written by this code. The folder is
uploaded as it is (hidden files aside) in one commit, after two checks: it is an embedstill model folder, and no
text file in it names a path of this machine (home, working directory, this install, the folder's own location).
Files already in the repository and not in the folder are left there.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

# Files never sent: temporary files of an interrupted write and any other hidden file.
IGNORE = [".*", "**/.*"]
# Files too big or binary to name a path: not read by the path check.
BINARY_SUFFIXES = (".safetensors", ".onnx", ".bin", ".pt", ".npz", ".npy", ".gguf", ".msgpack", ".h5")


class PublishError(ValueError):
    """A folder that must not be published as it is, or a Hub that cannot be reached; the message says why."""


@dataclass
class PushReport:
    repo_id: str
    revision: str
    files: list[str]
    size_bytes: int
    dry_run: bool
    private: Optional[bool] = None
    repo_url: Optional[str] = None
    commit_url: Optional[str] = None
    notes: list[str] = field(default_factory=list)


def machine_paths(folder: Path) -> list[str]:
    """Paths of this machine a published file must not name: home, working directory, this install (the
    package's folder and the Python environment) and the folder's own parent."""
    import trainer

    found = {str(Path.home()), str(Path.cwd()), str(Path(trainer.__file__).resolve().parent.parent),
             sys.prefix, str(folder.resolve().parent)}
    found |= {str(Path(p).resolve()) for p in list(found)}
    return sorted(p for p in found if p not in ("/", ""))


def path_leaks(folder: Path, paths: Optional[list[str]] = None) -> list[str]:
    """``file:line: names PATH`` for every line of a text file under ``folder`` that names one of ``paths``."""
    paths = machine_paths(folder) if paths is None else paths
    # A path ends where a name cannot go on: "/root" does not match "/rootfs".
    pattern = re.compile("|".join(re.escape(p) + r"(?![\w.-])" for p in sorted(paths, key=len, reverse=True)))
    hits = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if file.suffix in BINARY_SUFFIXES:
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for line_no, line in enumerate(text.splitlines(), start=1):
            for match in pattern.finditer(line):
                hits.append(f"{file}:{line_no}: names {match.group(0)}, a path of this machine")
    return hits


def check_folder(folder: Path) -> dict[str, Any]:
    """The folder's metadata, or an error that names what makes it unpublishable."""
    from trainer.models.checkpoint import read_metadata

    if not folder.is_dir():
        raise PublishError(f"checkpoint={folder}: no such folder")
    metadata = read_metadata(folder)
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.onnx")):
        raise PublishError(f"checkpoint={folder}: no weights (*.safetensors or *.onnx): not a complete model folder")
    return metadata


def files_to_send(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _hub_ready() -> None:
    """Fail before any request when the Hub cannot be used: offline mode, or no token."""
    from huggingface_hub import constants, get_token

    if constants.is_offline_mode():
        raise PublishError("the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1, as "
                           "the Makefile and the tests set it): publishing needs the network; run with "
                           "HF_HUB_OFFLINE=0")
    if not get_token():
        raise PublishError("no Hugging Face token: set HF_TOKEN (a token with write access) or run "
                           "`hf auth login`; the token is never taken on the command line")


def publish(folder: Path, repo_id: str, *, private: Optional[bool] = True, revision: str = "main",
            commit_message: Optional[str] = None, refresh_card: bool = True, dry_run: bool = False,
            api: Any = None, log: Callable[[str], None] = print) -> PushReport:
    """Rewrite the card (checkpoints), check the folder, then create the repository (``exist_ok``), the branch
    ``revision`` if it is not ``main``, and upload the folder in one commit. ``api``: an ``HfApi`` (tests)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(folder)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PublishError(f"repo_id={repo_id}: {err}") from None
    metadata = check_folder(folder)
    is_checkpoint = (folder / "modules.json").exists() and not (folder / "export.json").exists()
    if refresh_card and is_checkpoint:
        from trainer.models.card import write_model_card

        write_model_card(folder, repo_id=repo_id)  # scores evaluated since the save; usage code names repo_id
    if not (folder / "README.md").exists():
        raise PublishError(f"checkpoint={folder}: no README.md (model card): save it again with embedstill")
    leaks = path_leaks(folder)
    if leaks:
        raise PublishError("the folder names paths of this machine, which would be published:\n  "
                           + "\n  ".join(leaks[:20]) + ("\n  ..." if len(leaks) > 20 else ""))
    files = files_to_send(folder)
    report = PushReport(repo_id=repo_id, revision=revision, files=[str(p.relative_to(folder)) for p in files],
                        size_bytes=sum(p.stat().st_size for p in files), dry_run=dry_run, private=private)
    log(f"{folder}: {len(files)} files, {report.size_bytes / 1e6:.1f} MB -> {repo_id}@{revision}"
        + (" (dry run: nothing sent)" if dry_run else ""))
    if dry_run:
        return report
    _hub_ready()
    from huggingface_hub import HfApi

    api = api if api is not None else HfApi()
    report.repo_url = str(api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"))
    if revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    step = metadata.get("step")
    message = commit_message or f"Upload {folder.name}" + (f" (step {step})" if step is not None else "") + \
        " with embedstill"
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                               commit_message=message, ignore_patterns=IGNORE)
    report.commit_url = str(commit.commit_url)
    log(f"published {folder} -> {report.repo_url} ({report.commit_url})")
    return report

"""Publishing to the Hub, against a local HTTP server that answers as the Hub does and records every request.

    pytest -q tests/test_push.py

The server implements what ``huggingface_hub`` 2.4 calls for ``create_repo``, ``create_branch`` and
``upload_folder``: ``/api/repos/create``, ``/api/models/<repo>/branch/<b>``, ``/api/validate-yaml``,
``/api/models/<repo>/preupload/<rev>`` (``*.safetensors`` as LFS, as the Hub's default ``.gitattributes`` does),
the LFS batch API (basic transfer; the upload itself is a PUT to the server), and the ndjson ``commit``. Xet
storage is switched off (``HF_HUB_DISABLE_XET=1``) so LFS files take the plain LFS path this server speaks.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import ROOT

TOKEN = "hf_embedstillTestToken0123456789abcdef"  # a made-up token: must reach only the Authorization header


class FakeHub:
    """Repositories, branches and files in memory; ``requests`` holds (method, path, headers, body) of each call."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.repos: dict[str, dict[str, Any]] = {}  # repo id -> {"private": ..., "branches": {name: {path: bytes}}}
        self.lfs: dict[str, bytes] = {}  # oid -> content
        self.url = ""

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        parts = path.split("?")[0].strip("/").split("/")
        if method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            repo = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            if repo in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}
            self.repos[repo] = {"private": payload.get("visibility") == "private", "branches": {"main": {}}}
            return 200, {"url": f"{self.url}/{repo}", "name": repo}
        if method == "POST" and path == "/api/validate-yaml":
            from huggingface_hub import ModelCard

            try:
                ModelCard(json.loads(body)["content"])  # the metadata must parse as the Hub parses it
            except Exception as err:  # noqa: BLE001
                return 400, {"errors": [{"message": str(err)}]}
            return 200, {"errors": [], "warnings": []}
        if method == "POST" and parts[:2] == ["api", "models"] and parts[4] == "branch":
            branches = self.repos[f"{parts[2]}/{parts[3]}"]["branches"]
            if parts[5] in branches:
                return 409, {"error": "Reference already exists"}
            branches[parts[5]] = dict(branches["main"])
            return 200, {}
        if method == "POST" and parts[:2] == ["api", "models"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "shouldIgnore": False, "oid": None,
                                    "uploadMode": "lfs" if f["path"].endswith(".safetensors") else "regular"}
                                   for f in files]}
        if method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
            objects = json.loads(body)["objects"]
            return 200, {"transfer": "basic", "objects": [
                {"oid": o["oid"], "size": o["size"], "authenticated": True,
                 "actions": {"upload": {"href": f"{self.url}/lfs-upload/{o['oid']}"},
                             "verify": {"href": f"{self.url}/lfs-verify"}}} for o in objects]}
        if method == "PUT" and parts[0] == "lfs-upload":
            if hashlib.sha256(body).hexdigest() != parts[1]:
                return 400, {"error": "content does not match its oid"}
            self.lfs[parts[1]] = body
            return 200, {}
        if method == "POST" and parts[0] == "lfs-verify":
            return (200, {}) if json.loads(body)["oid"] in self.lfs else (404, {"error": "unknown object"})
        if method == "POST" and parts[:2] == ["api", "models"] and parts[4] == "commit":
            files = self.repos[f"{parts[2]}/{parts[3]}"]["branches"][parts[5]]
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "lfsFile":
                    files[item["value"]["path"]] = self.lfs[item["value"]["oid"]]
                elif item["key"] == "header":
                    self.last_commit = item["value"]
            return 200, {"commitUrl": f"{self.url}/{parts[2]}/{parts[3]}/commit/0123abcd", "commitOid": "0123abcd"}
        return 404, {"error": f"not implemented by the test server: {method} {path}"}


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.requests.append({"method": self.command, "path": self.path, "headers": headers, "body": body})
            status, answer = fake.handle(self.command, self.path, headers, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def checkpoint(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint inside a run dir whose evaluation of its step is on disk (MTEB layout)."""
    from trainer.models import Encoder, EncoderSpec, PromptSpec
    from trainer.models.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("pushrun") / "news-run"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  train_files: [news/train.jsonl]\n  num_negatives: 1\n")
    spec = EncoderSpec(max_length_query=16, max_length_passage=32, prompts=PromptSpec(query_prefix="query : "))
    ckpt = save_checkpoint(Encoder.from_pretrained(str(tiny_model), spec), run / "checkpoints" / "step-000008",
                           {"step": 8, "run": str(run)})
    result = {"task_name": "news", "scores": {"test": [{"main_score": 0.61, "ndcg_at_10": 0.61, "mrr_at_10": 0.55}]},
              "embedstill": {"status": "ok", "kind": "retrieval", "main_score_name": "ndcg_at_10",
                             "model": {"step": 8}}}
    (run / "eval" / "step-000008").mkdir(parents=True)
    (run / "eval" / "step-000008" / "news.json").write_text(json.dumps(result))  # evaluated after the save
    return ckpt


def hub_env(hub: FakeHub, home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_push_uploads_the_folder_and_its_card_and_the_token_only_as_authorization(
        hub: FakeHub, checkpoint: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    proc = subprocess.run([sys.executable, "-m", "trainer.push", f"checkpoint={checkpoint}", "repo_id=acme/news-minilm",
                           "commit_message=First release"], capture_output=True, text=True, cwd=tmp_path,
                          env=hub_env(hub, tmp_path / "hf_home"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{hub.url}/acme/news-minilm/commit/0123abcd" in proc.stdout
    repo = hub.repos["acme/news-minilm"]
    assert repo["private"] is True  # private unless asked otherwise
    sent = repo["branches"]["main"]
    local = {str(p.relative_to(checkpoint)): p.read_bytes() for p in checkpoint.rglob("*") if p.is_file()}
    assert sent == local  # every file, byte for byte; nothing else (no temporary or hidden file)
    assert {"model.safetensors", "README.md", "embedstill.json", "modules.json", "sentence_bert_config.json",
            "config_sentence_transformers.json", "1_Pooling/config.json", "tokenizer.json"} <= set(sent)
    assert hub.lfs and set(hub.lfs.values()) == {local["model.safetensors"]}  # the weights went through LFS
    assert hub.last_commit["summary"] == "First release"
    card = ModelCard(sent["README.md"].decode())
    assert card.data.library_name == "sentence-transformers"
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"ndcg_at_10": 0.61, "mrr_at_10": 0.55}
    assert 'SentenceTransformer("acme/news-minilm")' in card.text  # the usage code names the repository

    auth = [r for r in hub.requests if r["path"].startswith("/api/")]
    assert auth and all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in auth)
    for r in hub.requests:
        assert TOKEN not in r["path"] and TOKEN.encode() not in r["body"]
        assert all(TOKEN not in v for k, v in r["headers"].items() if k != "authorization")
    assert TOKEN not in proc.stdout + proc.stderr
    for file in [*tmp_path.rglob("*"), *checkpoint.parent.parent.rglob("*")]:
        assert not file.is_file() or TOKEN.encode() not in file.read_bytes(), file


def test_push_to_an_existing_repo_and_a_new_branch(hub: FakeHub, checkpoint: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi, constants

    from trainer.hub import publish

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the tests run offline; this one talks to the server
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.repos["acme/existing"] = {"private": False, "branches": {"main": {"notes.md": b"kept"}}}
    logged: list[str] = []
    report = publish(checkpoint, "acme/existing", private=True, revision="v1", api=HfApi(endpoint=hub.url),
                     log=logged.append)
    repo = hub.repos["acme/existing"]
    assert repo["private"] is False  # an existing repository keeps its visibility
    assert repo["branches"]["main"] == {"notes.md": b"kept"}  # the commit went to the new branch only
    assert set(repo["branches"]["v1"]) >= {"notes.md", "README.md", "model.safetensors"}
    assert report.commit_url.endswith("/acme/existing/commit/0123abcd")
    assert hub.last_commit["summary"] == "Upload step-000008 (step 8) with embedstill"
    assert not any(TOKEN in line for line in logged)


def test_push_refuses_before_any_request(hub: FakeHub, checkpoint: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from huggingface_hub import HfApi, constants

    from trainer.hub import PublishError, publish

    api = HfApi(endpoint=hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match="offline mode.*HF_HUB_OFFLINE=0"):
        publish(checkpoint, "acme/x", api=api, log=lambda _: None)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_home"))  # no stored login either
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "empty_home" / "token"))
    with pytest.raises(PublishError, match="no Hugging Face token: set HF_TOKEN"):
        publish(checkpoint, "acme/x", api=api, log=lambda _: None)
    with pytest.raises(PublishError, match="repo_id=a/b/c"):
        publish(checkpoint, "a/b/c", api=api, log=lambda _: None)
    leaky = tmp_path / "leaky"
    shutil.copytree(checkpoint, leaky)
    (leaky / "notes.md").write_text(f"trained on {Path.home() / 'data' / 'secret.jsonl'}\n")
    with pytest.raises(PublishError, match=r"notes.md:1: names .*a path of this machine"):
        publish(leaky, "acme/x", api=api, refresh_card=False, log=lambda _: None)
    with pytest.raises(FileNotFoundError, match="no embedstill.json"):
        publish(tmp_path, "acme/x", api=api, log=lambda _: None)
    assert hub.requests == []  # every refusal came before the first request


def test_push_dry_run_writes_the_card_and_sends_nothing(hub: FakeHub, checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from trainer.hub import publish

    copy = tmp_path / "runs" / "news-run"
    shutil.copytree(checkpoint.parent.parent, copy)
    folder = copy / "checkpoints" / "step-000008"
    (folder / "README.md").unlink()
    report = publish(folder, "acme/news", dry_run=True, log=lambda _: None)
    assert report.dry_run and report.commit_url is None and "README.md" in report.files
    assert 'SentenceTransformer("acme/news")' in (folder / "README.md").read_text()
    assert hub.requests == []

"""A small Hugging Face Hub-compatible server on 127.0.0.1, for tests.

It keeps model repos in memory as a chain of commits and serves the routes
``huggingface_hub`` needs to create a repo, upload a folder (files sent inline
as base64: preupload answers ``uploadMode: regular``), tag a commit and
download files by branch, tag or commit sha. It records every request so tests
can check what the client sent (and that a token travelled only in headers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    commits: dict = field(default_factory=dict)  # sha -> {path: bytes}
    refs: dict = field(default_factory=dict)  # branch or tag -> sha
    private: bool = False

    def commit(self, files: dict, parent: str | None, summary: str) -> str:
        material = json.dumps([parent, summary, sorted((p, hashlib.sha1(b).hexdigest()) for p, b in files.items())])
        sha = hashlib.sha1(material.encode()).hexdigest()
        self.commits[sha] = files
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        return None


class HubState:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.fail_downloads = False

    def create(self, repo_id: str, private=False) -> Repo:
        if repo_id not in self.repos:
            repo = Repo(private=private)
            repo.refs["main"] = repo.commit({".gitattributes": b"*.safetensors filter=lfs\n"}, None, "initial commit")
            self.repos[repo_id] = repo
        return self.repos[repo_id]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass made per server

    def log_message(self, *args):  # quiet
        pass

    # -- helpers ---------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload=None, headers=None, body: bytes | None = None, head=False):
        if body is None:
            body = json.dumps(payload if payload is not None else {}).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _record(self, body: bytes = b""):
        with self.state.lock:
            self.state.requests.append({
                "method": self.command, "path": self.path,
                "headers": dict(self.headers.items()), "body": body,
            })

    def _repo_id_and_rest(self, parts):
        return "/".join(parts[:2]), parts[2:]

    # -- routes ----------------------------------------------------------------
    def do_GET(self, head=False):
        self._record()
        path = unquote(urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        if path == "/api/whoami-v2":
            if "authorization" not in {k.lower() for k in self.headers}:
                return self._send(401, {"error": "Invalid credentials"}, head=head)
            return self._send(200, {"type": "user", "name": "tester", "fullname": "Test User", "orgs": [],
                                    "auth": {"type": "access_token", "accessToken": {"role": "write"}}}, head=head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rest = self._repo_id_and_rest(parts)
            return self._resolve(repo_id, rest[1], "/".join(rest[2:]), head)
        if len(parts) >= 4 and parts[0] == "api" and parts[1] == "models" and len(parts) >= 6 and parts[4] == "revision":
            return self._model_info("/".join(parts[2:4]), parts[5], head)
        return self._send(404, {"error": f"no route for GET {path}"}, head=head)

    def do_HEAD(self):
        return self.do_GET(head=True)

    def _resolve(self, repo_id, revision, filename, head):
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, head=head)
        sha = repo.resolve(revision)
        if sha is None:
            return self._send(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"}, head=head)
        files = repo.commits[sha]
        if filename not in files:
            return self._send(404, {"error": "Entry not found"},
                              {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}, head=head)
        if self.state.fail_downloads:
            return self._send(500, {"error": "server error (test)"}, head=head)
        data = files[filename]
        etag = hashlib.sha256(data).hexdigest()
        return self._send(200, body=data, head=head, headers={
            "Content-Type": "application/octet-stream", "X-Repo-Commit": sha, "ETag": f'"{etag}"',
        })

    def _model_info(self, repo_id, revision, head):
        repo = self.state.repos.get(repo_id)
        sha = repo.resolve(revision) if repo else None
        if sha is None:
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, head=head)
        siblings = [{"rfilename": name} for name in sorted(repo.commits[sha])]
        return self._send(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "siblings": siblings,
                                "private": repo.private}, head=head)

    def do_POST(self):
        body = self._body()
        self._record(body)
        path = unquote(urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        if path == "/api/repos/create":
            payload = json.loads(body or b"{}")
            name = payload["name"]
            repo_id = f"{payload['organization']}/{name}" if payload.get("organization") else name
            if "/" not in repo_id:
                repo_id = f"tester/{repo_id}"
            existed = repo_id in self.state.repos
            self.state.create(repo_id, private=bool(payload.get("private")))
            url = f"http://{self.headers['Host']}/{repo_id}"
            if existed:
                return self._send(409, {"error": "You already created this model repo", "url": url})
            return self._send(200, {"url": url, "name": repo_id, "id": repo_id})
        if path == "/api/validate-yaml":
            return self._send(200, {"errors": [], "warnings": []})
        if len(parts) >= 6 and parts[:2] == ["api", "models"]:
            repo_id, action, revision = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
            repo = self.state.repos.get(repo_id)
            if repo is None:
                return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})
            if action == "commit":
                return self._commit(repo_id, repo, revision, body)
            if action == "tag":
                sha = repo.resolve(revision)
                tag = json.loads(body)["tag"]
                if sha is None:
                    return self._send(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                if tag in repo.refs:
                    return self._send(409, {"error": f"Tag {tag} already exists"})
                repo.refs[tag] = sha
                return self._send(200, {})
        return self._send(404, {"error": f"no route for POST {path}"})

    def _commit(self, repo_id, repo, revision, body):
        parent = repo.resolve(revision)
        if parent is None:
            return self._send(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
        files = dict(repo.commits[parent])
        summary = ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:
                return self._send(400, {"error": f"unsupported commit operation {key!r} in test server"})
        with self.state.lock:
            sha = repo.commit(files, parent, summary)
            repo.refs[revision if revision in repo.refs else "main"] = sha
        host = self.headers["Host"]
        return self._send(200, {"success": True, "commitOid": sha,
                                "commitUrl": f"http://{host}/{repo_id}/commit/{sha}"})


class HubServer:
    """``with HubServer() as hub: hub.url``; ``hub.state`` holds repos and recorded requests."""

    def __init__(self):
        self.state = HubState()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

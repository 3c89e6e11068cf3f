"""Request handler of the local test Hub (`tests/support/hub_server.py`): the Hub's HTTP routes, over `HubStorage`.

Each route answers like huggingface.co does for what `huggingface_hub` 2.4.0 reads: JSON bodies, `X-Repo-Commit`,
`ETag` / `X-Linked-Etag` / `X-Linked-Size` on `resolve`, and `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`,
`EntryNotFound`) on errors. LFS files are redirected to / uploaded to the CDN server (`hub.cdn_endpoint`).
"""

from __future__ import annotations

import hashlib
import json
import re
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tests.support.hub_storage import SHA256_RE, HubError, Repo, file_json, now

if TYPE_CHECKING:
    from tests.support.hub_server import HubHTTPServer

TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO = r"([^/]+)/([^/]+)"


class HubHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stopped server really looks down (no pooled keep-alive)
    protocol_version = "HTTP/1.0"
    server: "HubHTTPServer"

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None: self._dispatch("GET")  # noqa: E704
    def do_HEAD(self) -> None: self._dispatch("HEAD")  # noqa: E704
    def do_POST(self) -> None: self._dispatch("POST")  # noqa: E704
    def do_PUT(self) -> None: self._dispatch("PUT")  # noqa: E704
    def do_DELETE(self) -> None: self._dispatch("DELETE")  # noqa: E704

    # ------------------------------------------------------------------ plumbing
    def _dispatch(self, method: str) -> None:
        hub, self.status = self.server.hub, 0
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        # read the whole body first: answering an error over unread bytes can reset the connection
        self.body = self._read_body() if method in ("POST", "PUT", "DELETE") else b""
        try:
            for methods, pattern, name in (_CDN_ROUTES if self.server.is_cdn else _API_ROUTES):
                match = re.match(pattern, url.path)
                if match and method in methods:
                    getattr(self, name)(method, *[unquote(g) if g else g for g in match.groups()])
                    break
            else:
                raise HubError(404, f"No route for {method} {url.path}")
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            headers.update({"X-Error-Code": err.code} if err.code else {})
            headers.update({"X-Repo-Commit": err.commit} if err.commit else {})
            self._send(err.status, {"error": err.message}, headers)
        except Exception as exc:  # a server bug: answer 500 and keep it for the test to inspect
            hub.errors.append(exc)
            self._send(500, {"error": f"local hub bug: {exc!r}"})
        auth = "authorization" in {k.lower() for k in self.headers}
        hub.requests.append((self.server.is_cdn, method, url.path, self.status, auth))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self) -> dict:
        return json.loads(self.body or b"{}")

    def _send(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.status = status
        self.send_response(status)
        if not isinstance(body, bytes):
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _user(self, *, required: bool = False) -> str | None:
        """User owning the bearer token; a wrong token is a 401 like on the Hub, whatever the route."""
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        if token is not None and token not in self.server.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        user = self.server.hub.tokens.get(token) if token else None
        if required and user is None:
            raise HubError(401, "You must be authenticated to access this resource")
        return user

    def _repo(self, rtype: str, ns: str, name: str, *, write: bool = False) -> Repo:
        user = self._user(required=write)
        repo = self.server.hub.storage.get_repo(rtype, f"{ns}/{name}")
        if repo is None or (repo.private and user is None):
            raise HubError(404 if user else 401, "Repository not found", code="RepoNotFound")
        return repo

    # ------------------------------------------------------------------ misc API
    def whoami(self, method: str) -> None:
        user = self._user(required=True)
        self._send(200, {"type": "user", "name": user, "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}}})

    def agent_harnesses(self, method: str) -> None:
        self._send(200, {"standardEnvVars": [], "harnesses": {}})

    def validate_yaml(self, method: str) -> None:
        content = self._json().get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
            assert meta is None or isinstance(meta, dict), "metadata must be a YAML mapping"
        except Exception as exc:  # noqa: BLE001 - report any YAML problem like the Hub does
            return self._send(400, {"errors": [{"message": str(exc)}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def create_repo(self, method: str) -> None:
        user = self._user(required=True)
        body = self._json()
        rtype = body.get("type") or "model"
        repo_id = f"{body.get('organization') or user}/{body['name']}"
        private = body.get("private") or body.get("visibility") == "private"
        url = f"{self.server.hub.endpoint}/{PREFIX[rtype]}{repo_id}"
        try:
            self.server.hub.storage.create_repo(rtype, repo_id, private=bool(private), sdk=body.get("sdk"))
        except HubError as err:  # the Hub's 409 body carries the url, which `exist_ok=True` relies on
            return self._send(err.status, {"error": err.message, "url": url}, {"X-Error-Message": err.message})
        self._send(200, {"url": url, "name": repo_id})

    # ------------------------------------------------------------------ repo API
    def repo_info(self, method: str, kind: str, ns: str, name: str, revision: str | None = None) -> None:
        repo = self._repo(TYPES[kind], ns, name)
        sha = self.server.hub.storage.resolve(repo, revision or "main")
        commit = repo.commits[sha]
        siblings = [file_json(f, key="rfilename") for f in sorted(commit.files.values(), key=lambda f: f.path)]
        info = {"id": repo.repo_id, "author": ns, "sha": sha, "lastModified": commit.date, "private": repo.private,
                "createdAt": repo.created_at, "disabled": False, "gated": False, "likes": 0, "tags": [],
                "siblings": siblings}
        if repo.repo_type == "space":
            info.update(sdk=repo.sdk, runtime=_RUNTIME, subdomain=f"{ns}-{name}".lower())
        self._send(200, info)

    def refs(self, method: str, kind: str, ns: str, name: str) -> None:
        repo = self._repo(TYPES[kind], ns, name)

        def fmt(refs: dict, kind: str) -> list:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": s} for n, s in refs.items()]
        self._send(200, {"branches": fmt(repo.branches, "heads"), "tags": fmt(repo.tags, "tags"),
                         "converts": [], "pullRequests": []})

    def tree(self, method: str, kind: str, ns: str, name: str, revision: str, path: str | None) -> None:
        repo, storage = self._repo(TYPES[kind], ns, name), self.server.hub.storage
        sha, prefix = storage.resolve(repo, revision), (path or "").strip("/")
        entries = storage.tree(repo, sha, prefix, recursive=self.query.get("recursive", "").lower() in ("1", "true"))
        if prefix and not entries:
            raise HubError(404, f"Entry not found: {prefix}", code="EntryNotFound", commit=sha)
        self._send(200, entries)

    def commits(self, method: str, kind: str, ns: str, name: str, revision: str) -> None:
        repo = self._repo(TYPES[kind], ns, name)
        sha = self.server.hub.storage.resolve(repo, revision)
        self._send(200, [{"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
                          "authors": [{"user": ns}]} for c in self.server.hub.storage.history(repo, sha)])

    def preupload(self, method: str, kind: str, ns: str, name: str, revision: str) -> None:
        repo = self._repo(TYPES[kind], ns, name, write=True)
        self._send(200, self.server.hub.storage.preupload(repo, revision, self._json().get("files", [])))

    def commit(self, method: str, kind: str, ns: str, name: str, revision: str) -> None:
        repo = self._repo(TYPES[kind], ns, name, write=True)
        if self.query.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by the local test Hub")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        ops = [(item["key"], item["value"]) for item in lines if item["key"] != "header"]
        branch = revision.removeprefix("refs/heads/")
        oid = self.server.hub.storage.commit(repo, branch, header.get("summary", ""), ops,
                                             message=header.get("description", ""),
                                             parent_commit=header.get("parentCommit"))
        url = f"{self.server.hub.endpoint}/{PREFIX[repo.repo_type]}{repo.repo_id}/commit/{oid}"
        self._send(200, {"success": True, "commitOid": oid, "commitUrl": url, "hookOutput": ""})

    def branch(self, method: str, kind: str, ns: str, name: str, branch: str) -> None:
        repo, storage = self._repo(TYPES[kind], ns, name, write=True), self.server.hub.storage
        with storage.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = storage.resolve(repo, self._json().get("startingPoint") or "main")
        self._send(200, {})

    def xet_token(self, method: str, *args: str) -> None:
        raise HubError(501, "Xet is not implemented by the local test Hub: set HF_HUB_DISABLE_XET=1")

    def variables(self, method: str, ns: str, name: str) -> None:
        repo = self._repo("space", ns, name, write=method != "GET")
        if method == "POST":
            body = self._json()
            repo.variables[body["key"]] = {"value": body["value"], "description": body.get("description"),
                                           "updatedAt": now()}
        elif method == "DELETE":
            repo.variables.pop(self._json()["key"], None)
        self._send(200, repo.variables)

    def runtime(self, method: str, ns: str, name: str) -> None:
        self._repo("space", ns, name)
        self._send(200, _RUNTIME)

    # ------------------------------------------------------------------ LFS + files
    def lfs(self, method: str, prefix: str | None, ns: str, name: str, action: str) -> None:
        rtype = TYPES.get((prefix or "").rstrip("/"), "model")
        self._repo(rtype, ns, name, write=True)
        hub, body = self.server.hub, self._json()
        if action == "verify":
            blob = hub.storage.lfs.get(body.get("oid", ""))
            if blob is None or len(blob) != body.get("size"):
                raise HubError(404, "LFS object not found")
            return self._send(200, {"message": "ok"})
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj.get("oid", ""), obj.get("size")
            if not SHA256_RE.match(oid) or not isinstance(size, int):
                objects.append({"oid": oid, "size": size or 0, "error": {"code": 422, "message": "bad object"}})
            elif oid in hub.storage.lfs:  # already uploaded: no actions, the client skips it
                objects.append({"oid": oid, "size": size})
            else:
                verify = f"{hub.endpoint}/{PREFIX[rtype]}{ns}/{name}.git/info/lfs/objects/verify"
                objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": f"{hub.cdn_endpoint}/lfs/{oid}?size={size}", "header": {}},
                    "verify": {"href": verify, "header": {}}}})
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   {"Content-Type": "application/vnd.git-lfs+json"})

    def resolve(self, method: str, prefix: str | None, ns: str, name: str, revision: str, path: str) -> None:
        repo = self._repo(TYPES.get((prefix or "").rstrip("/"), "model"), ns, name)
        sha = self.server.hub.storage.resolve(repo, revision)
        stored = repo.commits[sha].files.get(path)
        if stored is None:
            raise HubError(404, "Entry not found", code="EntryNotFound", commit=sha)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{stored.etag}"', "Accept-Ranges": "bytes"}
        if stored.lfs_sha256:  # like the Hub: redirect LFS files to the (off-origin) CDN
            headers.update({"X-Linked-Etag": f'"{stored.lfs_sha256}"', "X-Linked-Size": stored.size,
                            "Location": f"{self.server.hub.cdn_endpoint}/lfs/{stored.lfs_sha256}"})
            return self._send(302, b"", headers)
        self._send(200, stored.content or b"", {**headers, "Content-Type": "application/octet-stream"})

    def cdn(self, method: str, oid: str) -> None:
        storage = self.server.hub.storage
        if method == "PUT":
            data = self.body
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, "sha256 mismatch for uploaded LFS object")
            storage.lfs[oid] = data
            return self._send(200, b"", {"ETag": f'"{oid}"'})
        if oid not in storage.lfs:
            raise HubError(404, "Not found")
        body = self.server.hub.cdn_overrides.get(oid, storage.lfs[oid])  # fault injection, see LocalHub
        self._send(200, body, {"ETag": f'"{oid}"', "Content-Type": "application/octet-stream"})


_RUNTIME = {"stage": "RUNNING", "hardware": {"current": "cpu-basic", "requested": "cpu-basic"}}
_API = r"^/api/(models|datasets|spaces)/" + _REPO
_API_ROUTES = [
    ({"GET"}, r"^/api/whoami-v2$", "whoami"),
    ({"GET"}, r"^/api/agent-harnesses$", "agent_harnesses"),
    ({"POST"}, r"^/api/validate-yaml$", "validate_yaml"),
    ({"POST"}, r"^/api/repos/create$", "create_repo"),
    ({"GET", "POST", "DELETE"}, r"^/api/spaces/" + _REPO + r"/variables$", "variables"),
    ({"GET"}, r"^/api/spaces/" + _REPO + r"/runtime$", "runtime"),
    ({"GET"}, _API + r"$", "repo_info"),
    ({"GET"}, _API + r"/revision/([^/]+)$", "repo_info"),
    ({"GET"}, _API + r"/refs$", "refs"),
    ({"GET"}, _API + r"/tree/([^/]+)(?:/(.*))?$", "tree"),
    ({"GET"}, _API + r"/commits/([^/]+)$", "commits"),
    ({"POST"}, _API + r"/preupload/([^/]+)$", "preupload"),
    ({"POST"}, _API + r"/commit/([^/]+)$", "commit"),
    ({"POST"}, _API + r"/branch/([^/]+)$", "branch"),
    ({"GET", "POST"}, _API + r"/(xet-[a-z]+-token)/.*$", "xet_token"),
    ({"POST"}, r"^/(spaces/|datasets/)?" + _REPO + r"\.git/info/lfs/objects/(batch|verify)$", "lfs"),
    ({"GET", "HEAD"}, r"^/(spaces/|datasets/)?" + _REPO + r"/resolve/([^/]+)/(.+)$", "resolve"),
]
_CDN_ROUTES = [({"GET", "HEAD", "PUT"}, r"^/lfs/([0-9a-f]{64})$", "cdn")]



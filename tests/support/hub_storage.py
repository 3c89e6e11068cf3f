"""In-memory git-like storage behind the local Hub test server (see `tests/support/hub_server.py`).

Repos hold immutable commit snapshots: each commit maps paths to `StoredFile` entries and has a real
40-hex sha, branches point at commits, so a download by an old sha keeps serving that commit's bytes.
LFS blobs live in one content-addressed store, keyed by their sha256 like the Hub's LFS bucket.

Example:
    ```python
    >>> storage = HubStorage()
    >>> repo = storage.create_repo("model", "alice/demo", private=False)
    >>> op = ("file", {"path": "a.txt", "content": "aGk=", "encoding": "base64"})
    >>> sha = storage.commit(repo, "main", "add a.txt", [op])
    >>> storage.resolve(repo, sha) == repo.branches["main"]
    True
    ```
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub sends files >= 10 MB through LFS
# Same spirit as the `.gitattributes` the Hub writes into every new repo (trimmed).
LFS_PATTERNS = ("*.keras", "*.h5", "*.bin", "*.pb", "*.pt", "*.pth", "*.safetensors", "*.onnx", "*.npy",
                "*.npz", "*.tflite", "*.ckpt", "*.pkl", "*.zip", "*.tar.gz", "*.gz", "*.msgpack")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()


class HubError(Exception):
    """An error the server turns into an HTTP response with the Hub's `X-Error-Code` header."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


def git_blob_sha(data: bytes) -> str:
    """Git object id of a blob, as the Hub reports it for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class StoredFile:
    path: str
    size: int
    blob_id: str  # git sha1 of the content (regular) or of the LFS pointer (lfs)
    content: bytes | None = None  # regular files only
    lfs_sha256: str | None = None  # LFS files only

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.blob_id


def file_json(f: StoredFile, *, key: str) -> dict:
    """A file as the Hub lists it: tree entry (`key="path"`) or `siblings` entry (`key="rfilename"`)."""
    lfs = {"size": f.size, "pointerSize": len(lfs_pointer(f.lfs_sha256, f.size))} if f.lfs_sha256 else None
    if key == "path":
        return {"path": f.path, "oid": f.blob_id, "size": f.size,
                **({"lfs": {"oid": f.lfs_sha256, **lfs}} if lfs else {})}
    return {"rfilename": f.path, "size": f.size, "blobId": f.blob_id,
            **({"lfs": {"sha256": f.lfs_sha256, **lfs}} if lfs else {})}


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubStorage:
    """Thread-safe store of repos, commits and LFS blobs."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lock = threading.RLock()
        self._counter = itertools.count()  # makes two identical commits still get distinct shas

    def get_repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool, sdk: str | None = None) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, "You already created this repo", code=None)
            repo = Repo(repo_type, repo_id, private, sdk, now())
            self.repos[(repo_type, repo_id)] = repo
            ops = [("file", {"path": ".gitattributes", "content": base64.b64encode(GITATTRIBUTES).decode()})]
            if repo_type == "space":  # the Hub seeds Spaces with a README carrying the SDK metadata
                readme = f"---\ntitle: {repo_id.split('/')[-1]}\nsdk: {sdk}\napp_file: app.py\n---\n"
                ops.append(("file", {"path": "README.md", "content": base64.b64encode(readme.encode()).decode()}))
            self.commit(repo, "main", "initial commit", ops, create_branch=True)
            return repo

    def resolve(self, repo: Repo, revision: str) -> str:
        """Branch, tag or full commit sha -> commit sha; unknown -> 404 RevisionNotFound."""
        rev = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        with self.lock:
            if rev in repo.branches:
                return repo.branches[rev]
            if rev in repo.tags:
                return repo.tags[rev]
            if SHA1_RE.match(revision) and revision in repo.commits:
                return revision
        raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")

    def upload_mode(self, path: str, size: int, sample: bytes) -> str:
        is_binary = b"\x00" in sample
        matches = any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)
        return "lfs" if (matches or is_binary or size >= LFS_THRESHOLD) and size > 0 else "regular"

    def commit(self, repo: Repo, branch: str, title: str, ops: list[tuple[str, dict]], *,
               message: str = "", parent_commit: str | None = None, create_branch: bool = False) -> str:
        """Apply NDJSON-style operations (`file`, `lfsFile`, `deletedFile`, `deletedFolder`) on `branch`."""
        with self.lock:
            if branch not in repo.branches and not create_branch:
                raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
            head = repo.branches.get(branch)
            if parent_commit is not None and parent_commit != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.commits[head].files) if head else {}
            for key, value in ops:
                path = value.get("path", "").strip("/")
                if key == "file":
                    data = base64.b64decode(value["content"]) if value.get("encoding", "base64") == "base64" \
                        else value["content"].encode()
                    files[path] = StoredFile(path, len(data), git_blob_sha(data), content=data)
                elif key == "lfsFile":
                    oid = value["oid"]
                    if oid not in self.lfs:
                        raise HubError(400, f"LFS object {oid} for '{path}' was not uploaded")
                    size = len(self.lfs[oid])
                    files[path] = StoredFile(path, size, git_blob_sha(lfs_pointer(oid, size)), lfs_sha256=oid)
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, "A file with this name doesn't exist", code="EntryNotFound")
                elif key == "deletedFolder":
                    files = {p: f for p, f in files.items() if not p.startswith(path + "/")}
                else:
                    raise HubError(400, f"Unknown commit operation '{key}'")
            date = now()
            tree = "".join(f"{p}\0{f.etag}\n" for p, f in sorted(files.items()))
            seed = f"{tree}|{head}|{title}|{message}|{date}|{next(self._counter)}".encode()
            oid = hashlib.sha1(seed).hexdigest()
            repo.commits[oid] = Commit(oid, head, title, message, date, files)
            repo.branches[branch] = oid
            return oid

    def preupload(self, repo: Repo, revision: str, files: list[dict]) -> dict:
        """Answer of `POST .../preupload/{rev}`: upload mode per file, plus the oid of the current version."""
        head = self.resolve(repo, revision)
        out = []
        for item in files:
            mode = self.upload_mode(item["path"], item["size"], base64.b64decode(item.get("sample", "")))
            known = repo.commits[head].files.get(item["path"])
            # the client compares this oid with its sha256 (lfs) or git sha1 (regular) to skip unchanged files
            oid = None if known is None else known.lfs_sha256 if mode == "lfs" else known.blob_id
            out.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": out, "commitOid": head}

    def tree(self, repo: Repo, sha: str, prefix: str, *, recursive: bool) -> list[dict]:
        """Entries of `GET .../tree/{rev}/{prefix}`, folders included, sorted by path."""
        entries: dict[str, dict] = {}
        for f in repo.commits[sha].files.values():
            if prefix and not f.path.startswith(prefix + "/"):
                continue
            rest = f.path[len(prefix) + 1 if prefix else 0:].split("/")
            for depth in range(1, len(rest) if recursive else min(2, len(rest))):  # parent folders
                folder = "/".join(filter(None, [prefix, *rest[:depth]]))
                entries[folder] = {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                   "size": 0, "path": folder}
            if recursive or len(rest) == 1:
                entries[f.path] = {"type": "file", **file_json(f, key="path")}
        return [entries[k] for k in sorted(entries)]

    def history(self, repo: Repo, oid: str) -> list[Commit]:
        out = []
        while oid is not None:
            out.append(repo.commits[oid])
            oid = repo.commits[oid].parent
        return out

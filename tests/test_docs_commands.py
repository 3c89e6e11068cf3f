"""Every shell command in README.md and docs/*.md works as written from a fresh clone.

Each ```bash block is cut into commands: a trailing backslash joins lines, `#` at the start of a
word begins a comment, and `;`, `&&`, `||`, `|`, `&`, `(`, `)` and newlines separate commands
(so `SHA=$(cmd ...)` yields `cmd ...`). Leading `VAR=value` words are set aside and their values
checked like arguments; `until`, `while`, `if`, `do`, `then`, `else` and `!` in front of a command
are dropped.

Checked for every command (no virtual env needed):
- no bare `python`, `python3`, `pip` or `pytest`: they need an activated virtual env, which the
  docs never assume; commands call `.venv/bin/python -m ...` (or a make target);
- no unquoted `<placeholder>` (bash would read it as a redirection);
- a word whose first path part is a top-level entry of a fresh clone (`hub_model`,
  `training/...`, `space/app.py`, ...) names a file or folder that a fresh clone has (tracked, or
  new and not git-ignored), unless it is the value of an output option (`--out`, `--json`,
  `--markdown`, `--cache-dir`); a word under `../shared/data/` exists when that folder is there;
- `make T`: the Makefile has the target T.

Run, with the project's `.venv` (skipped with the reason when `.venv` is absent), from the
repository root with no virtual env activated:
- every module named as `.venv/bin/python -m M` is importable: `.venv/bin/python -m M --help`
  exits 0 (once per module); a module of this project must be a file in the fresh clone;
- every program named as `.venv/bin/P` is installed there;
- a command that asks for `--help` is run exactly as written (`bash -c`).

Not run (only the checks above), by these rules:
- `make ...`: creates the venv, then serves the Space, runs the suite, or trains;
- `.venv/bin/python -m M` with other arguments: needs a running Space, the shared data,
  training time, the network or `HF_TOKEN`;
- `.venv/bin/python FILE.py`: starts the Space (a server that does not return);
- `curl ...`: needs a running Space;
- `.venv/bin/hf`, `.venv/bin/papermill`, `.venv/bin/gradio`: log in over the network, train, or
  serve;
- `.ci/run`: reinstalls `.venv` and runs the whole suite;
- `export`, `kill`, `sleep`, `done`, `fi`: shell plumbing around the commands above.
Any other command fails the test until a rule for it is written here.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from tests.conftest import missing

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHARED_DATA = "../shared/data"

BARE = {"python", "python3", "pip", "pip3", "pytest"}
OUTPUT_OPTIONS = {"--out", "--json", "--markdown", "--cache-dir"}
PREFIX_WORDS = {"until", "while", "if", "do", "then", "else", "!"}
PLUMBING = {"export", "kill", "sleep", "done", "fi"}
NOT_RUN_PROGRAMS = {"hf", "papermill", "gradio"}  # .venv/bin/<program>: network, training or a server
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ";;", "|&"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# --- reading the blocks ---------------------------------------------------------------------

def bash_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every ```bash block."""
    blocks, lines, start = [], None, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if lines is None and line.strip() == "```bash":
            lines, start = [], number + 1
        elif lines is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines)))
            lines = None
        elif lines is not None:
            lines.append(line)
    assert lines is None, f"{path.name}: unclosed ```bash block at line {start - 1}"
    return blocks


def strip_comment(line: str) -> str:
    """The line without a `#` comment (a `#` that starts a word, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def logical_lines(block: str) -> list[tuple[int, str]]:
    """(offset, line) with continuation lines joined and comments removed."""
    out, pending, first = [], "", 0
    for offset, raw in enumerate(block.splitlines()):
        if not pending:
            first = offset
        line = strip_comment(raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return [(offset, line) for offset, line in out if line.strip()]


def split_commands(line: str) -> list[list[str]]:
    """The commands of one line as word lists (quotes removed)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    commands, words = [], []
    for token in lexer:
        if token in SEPARATORS:
            commands.append(words)
            words = []
        else:
            words.append(token)
    commands.append(words)
    cleaned = []
    for words in commands:
        while words and words[0] in PREFIX_WORDS:
            words = words[1:]
        if words:
            cleaned.append(words)
    return cleaned


def unquoted_placeholder(line: str) -> str | None:
    bare = re.sub(r"'[^']*'|\"[^\"]*\"", "''", line)
    match = re.search(r"(?:^|\s)(<[^\s>]*>)", bare)
    return match.group(1) if match else None


def collect() -> list[tuple[str, str, list[str], list[str]]]:
    """(where, line, assignments, words) for every command in the docs."""
    found = []
    for path in DOCS:
        for start, block in bash_blocks(path):
            for offset, line in logical_lines(block):
                for words in split_commands(line):
                    env = []
                    while words and ASSIGNMENT.match(words[0]):
                        env.append(words.pop(0))
                    if words or env:
                        found.append((f"{path.relative_to(ROOT)}:{start + offset}", line, env, words))
    return found


COMMANDS = collect()


# --- what a fresh clone has -----------------------------------------------------------------

@lru_cache(maxsize=1)
def fresh_clone_files() -> frozenset[str]:
    """Files a fresh clone (plus files not yet committed and not ignored) has, relative to the root."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                                cwd=ROOT, capture_output=True, check=True, timeout=60).stdout.decode()
        return frozenset(name for name in listed.split("\0") if name and (ROOT / name).exists())
    except (OSError, subprocess.SubprocessError):  # no git: every file on disk outside the usual ignores
        skip = {".venv", ".git", ".cache", "runs", "build", "mlruns", "test-artifacts", "__pycache__"}
        return frozenset(str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                         if p.is_file() and not skip & set(p.relative_to(ROOT).parts))


@lru_cache(maxsize=1)
def fresh_clone_entries() -> frozenset[str]:
    """Every file and folder of a fresh clone."""
    entries = set()
    for name in fresh_clone_files():
        parts = name.split("/")
        entries.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(entries)


def top_level() -> set[str]:
    return {name.split("/")[0] for name in fresh_clone_files()}


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE)}


def path_words(env: list[str], words: list[str]) -> list[str]:
    """The words (and assignment / `--opt=value` values) that may name files."""
    values, previous = [], None
    for word in [item.split("=", 1)[1] for item in env] + words:
        if word.startswith("--") and "=" in word:
            word = word.split("=", 1)[1]
        if previous not in OUTPUT_OPTIONS and not word.startswith(("-", "$")) and "://" not in word:
            values.append(word)
        previous = word
    return values


def check_path(word: str) -> str | None:
    """Why `word` is a missing path, or None."""
    if any(char in word for char in "*?[]{}"):
        return None
    name = word.rstrip("/")
    if name == SHARED_DATA or name.startswith(SHARED_DATA + "/"):
        shared = ROOT.parent / "shared" / "data"
        if shared.is_dir() and not (ROOT / name).exists():
            return f"{word}: not in {shared}"
        return None
    name = name.removeprefix("./")
    if name.split("/")[0] in top_level() and name not in fresh_clone_entries():
        return f"{word}: not in a fresh clone of the repository"
    return None


# --- static checks --------------------------------------------------------------------------

def test_every_page_has_commands():
    pages = {where.split(":")[0] for where, *_ in COMMANDS}
    assert "README.md" in pages
    for name in ("docs/api.md", "docs/operations.md", "docs/training.md", "docs/release.md"):
        assert name in pages, f"{name}: no ```bash block"


@pytest.mark.parametrize("where, line, env, words", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_as_written(where, line, env, words):
    problems = []
    placeholder = unquoted_placeholder(line)
    if placeholder:
        problems.append(f"unquoted placeholder {placeholder} (bash reads it as a redirection)")
    if words:
        program = words[0]
        if program in BARE:
            problems.append(f"bare `{program}` needs an activated virtual env; write `.venv/bin/python -m ...`")
        elif program == "make":
            targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
            assert targets, f"{where}: `make` without a target"
            problems += [f"make target {t!r} is not in the Makefile" for t in targets if t not in makefile_targets()]
        elif program.startswith(".venv/bin/"):
            name = program.removeprefix(".venv/bin/")
            if name == "python":
                assert len(words) > 1, f"{where}: bare .venv/bin/python"
                if words[1] != "-m" and not words[1].endswith(".py"):
                    problems.append(f"`.venv/bin/python {words[1]}`: no rule for it in this test")
            elif name not in NOT_RUN_PROGRAMS:
                problems.append(f"{program}: no rule for it in this test")
        elif program in {"curl", *PLUMBING}:
            pass
        elif program.startswith(".ci/"):
            pass  # checked as a path below
        else:
            problems.append(f"`{program}`: no rule for it in this test (see the module docstring)")
    problems += [why for word in path_words(env, words) if (why := check_path(word))]
    assert not problems, f"{where}: {line.strip()}\n  " + "\n  ".join(problems)


def test_paths_and_targets_checks_catch_mistakes():
    """The checks themselves: a typo in a path, a target or a bare python is caught."""
    assert check_path("training/splits/lc25000-lung-grouped.csv") is None
    assert check_path("training/splits/no-such.csv")
    assert check_path("runs/anything") is None and check_path("tile.jpeg") is None
    assert path_words([], ["--out", "training/new", "hub_model"]) == ["hub_model"]
    assert {"demo", "test", "setup"} <= makefile_targets()
    assert split_commands('SHA=$(.venv/bin/python -m scripts.release.push_model --repo-id a/b) && echo "$SHA"') == \
        [["SHA=$"], [".venv/bin/python", "-m", "scripts.release.push_model", "--repo-id", "a/b"], ["echo", "$SHA"]]
    assert split_commands("until curl -sf http://x/healthz; do sleep 1; done") == \
        [["curl", "-sf", "http://x/healthz"], ["sleep", "1"], ["done"]]
    assert strip_comment("make demo   # see docs/api.md#mcp") == "make demo   "
    assert unquoted_placeholder("--pid <PID>") == "<PID>" and unquoted_placeholder("-d '<x>'") is None


# --- runs (need .venv) ----------------------------------------------------------------------

def clean_env() -> dict[str, str]:
    """The environment of a new shell in a fresh clone: no virtual env on PATH or activated."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and Path(p).resolve() != VENV_BIN.resolve())
    return env


def need_venv() -> None:
    if not (VENV_BIN / "python").exists():
        missing(f"no virtual env at {VENV_BIN.parent} (run `make setup`)", ci_hint="make test creates it")


MODULES = sorted({words[2] for _, _, _, words in COMMANDS
                  if words[:2] == [".venv/bin/python", "-m"] and len(words) > 2})
PROGRAMS = sorted({words[0] for _, _, _, words in COMMANDS if words and words[0].startswith(".venv/bin/")})
HELP_COMMANDS = [(where, " ".join(shlex.quote(w) for w in [*env, *words]))
                 for where, _, env, words in COMMANDS if words and words[-1] == "--help"]


# Slow tier: each run is a fresh interpreter importing TensorFlow (about 4.5 s; 55 s in all).
@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_module_runs_with_help(module):
    need_venv()
    first = module.split(".")[0]
    if first in top_level():
        path = module.replace(".", "/")
        present = {f"{path}.py", f"{path}/__main__.py"} & fresh_clone_entries()
        assert present, f"{module}: no such file in a fresh clone"
    proc = subprocess.run([str(VENV_BIN / "python"), "-m", module, "--help"], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{module} --help exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip(), f"{module} --help printed nothing"


@pytest.mark.parametrize("program", PROGRAMS)
def test_program_is_installed(program):
    need_venv()
    assert os.access(ROOT / program, os.X_OK), f"{program} is not installed by `make setup`"


@pytest.mark.slow
@pytest.mark.parametrize("where, command", HELP_COMMANDS, ids=[c[0] for c in HELP_COMMANDS])
def test_help_commands_run_as_written(where, command):
    need_venv()
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{where}: `{command}` exited {proc.returncode}:\n{proc.stderr[-2000:]}"


def test_readme_is_short_and_every_local_link_resolves():
    assert (ROOT / "README.md").stat().st_size <= 8 * 1024, "README.md over 8 KB: move detail into docs/"
    broken = []
    for page in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)

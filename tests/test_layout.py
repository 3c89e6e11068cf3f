"""The layout the docs describe is the tree there is, and imports sit at the top of each module."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

CODE_FOLDERS = ("src", "training", "scripts", "space", "tests")
SPACE_ONLY = ("app", "service", "panels", "batching", "queue_poll", "uploads", "examples", "slide_tab", "slide_summary",
              "slide_views", "slide_viewer", "viewer_assets")
SPACE_FOLDERS = ("__pycache__", "static", "example_slides")   # vendored browser files; the example slide (ignored)
MAX_LINES = 300   # past this, split by responsibility (tests and notebooks aside)
LAYOUT_DOC = ROOT / "docs" / "development.md"


def _section(path: Path, title: str) -> str:
    text = path.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _packages(top: str) -> list[Path]:
    return sorted(p.parent for p in (ROOT / top).rglob("__init__.py"))


def _modules(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("package", _packages("src") + _packages("training") + _packages("scripts")
                         + [ROOT / "space", ROOT / "tests" / "support"], ids=str)
def test_every_module_is_listed_in_the_layout_table(package):
    """docs/development.md has one row per folder, naming each of its modules."""
    folder = package.relative_to(ROOT).as_posix()
    rows = [line for line in _section(LAYOUT_DOC, "Layout").splitlines() if line.startswith(f"| `{folder}/` |")]
    assert rows, f"no row for {folder}/ in {LAYOUT_DOC.name}"
    unlisted = [m for m in _modules(package) if f"`{m}" not in rows[0] and f"`{m}.py`" not in rows[0]]
    assert not unlisted, f"{folder}/: {unlisted} missing from the layout table"
    if package.name != "space":   # the Space's folder is not a package
        assert ast.get_docstring(ast.parse((package / "__init__.py").read_text())), f"{folder}/__init__.py says nothing"


def test_the_space_folder_holds_only_the_space():
    """The shared package is in src/; space/ holds app.py and the modules only it uses."""
    assert sorted(p.stem for p in (ROOT / "space").glob("*.py")) == sorted(SPACE_ONLY)
    assert not [p for p in (ROOT / "space").iterdir() if p.is_dir() and p.name not in SPACE_FOLDERS]


def test_no_non_test_file_is_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for top in ("src", "training", "scripts", "space")
            for p in (ROOT / top).rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_layout_table_names_no_module_that_moved():
    """A row names only its own folder's modules (a module named in another folder's row has moved)."""
    everywhere = {p.stem for top in CODE_FOLDERS for p in (ROOT / top).rglob("*.py")}
    for line in _section(LAYOUT_DOC, "Layout").splitlines():
        match = re.match(r"\| `((?:src|training|scripts)(?:/\w+)*)/` \| (.*)", line)
        if match:
            folder = ROOT / match.group(1)
            here = set(_modules(folder)) | {p.name for p in folder.iterdir() if p.is_dir()}
            named = {n for n in re.findall(r"`(\w+)(?:\.py)?`", match.group(2)) if n in everywhere}
            assert named <= here, f"{match.group(1)}/ row names {sorted(named - here)}, which live elsewhere"


def test_readme_layout_names_every_folder():
    section = _section(ROOT / "README.md", "Layout")
    for package in _packages("training") + _packages("scripts"):
        if package.name in ("training", "scripts"):
            continue
        assert f"`{package.name}/`" in section, f"README's layout section lacks {package.relative_to(ROOT)}/"
    for top in ("space", "training", "hub_model", "scripts", "tests", "docs"):
        assert f"| `{top}/` |" in section


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    found.append((inner.lineno, lines[inner.lineno - 1]))
    return found


def test_imports_are_at_the_top_unless_a_comment_says_why():
    """A function-level import is allowed only with a ``# deferred: <reason>`` comment on its line."""
    offenders = [f"{path.relative_to(ROOT)}:{line}: {text.strip()}"
                 for top in CODE_FOLDERS for path in sorted((ROOT / top).rglob("*.py"))
                 for line, text in _function_level_imports(path) if "# deferred:" not in text]
    assert not offenders, "\n".join(offenders)


def test_no_test_imports_a_private_name_of_ours():
    """Tests use the public API: nothing named ``_x`` is imported from the project's own modules."""
    ours = ("imageclf", "training", "scripts", "tests", "app")
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ours:
                offenders += [f"{path.name}: {node.module}.{alias.name}" for alias in node.names
                              if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not offenders, offenders

"""Every repository path and ``python -m`` module that README.md and docs/ name exists (issue 22)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
TOP = ("fada_rt/", "train/", "benchmarks/", "scripts/", "docs/", "tests/", ".ci/")
PLACEHOLDER = re.compile(r"[A-Z]{2,}(?![a-z])|[*<>{}]|\.\.\.|\$")  # DIR, NAME, globs, <x>, {a,b}, ...


def _paths(text: str) -> set[str]:
    quoted = re.findall(r"`([^`\s]+)`", text)
    linked = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http", "#", "mailto:"))]
    return {t.split("#")[0].split("::")[0].rstrip(".,:;") for t in quoted + linked}


def _repo_path(doc: Path, token: str) -> Path | None:
    if PLACEHOLDER.search(token):
        return None
    if token.startswith(TOP) or token in ("README.md", "CHANGELOG.md", "pyproject.toml"):
        return ROOT / token
    if token.startswith(("../", "./")) or (doc.parent != ROOT and token.endswith(".md") and "/" not in token):
        return (doc.parent / token).resolve()
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_paths_exist(doc: Path) -> None:
    missing = []
    for token in sorted(_paths(doc.read_text())):
        path = _repo_path(doc, token)
        if path is not None and not path.exists() and not str(path).startswith(str(ROOT.parent / "shared")):
            missing.append(token)
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


CURRENT = [d for d in DOCS if d.name != "CHANGELOG.md"]  # the changelog names old modules on purpose


@pytest.mark.parametrize("doc", CURRENT, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_modules_exist(doc: Path) -> None:
    modules = set(re.findall(r"python -m ([A-Za-z_][\w.]*)", doc.read_text()))
    own = {m for m in modules if m.split(".")[0] in ("fada_rt", "train", "benchmarks")}
    missing = sorted(m for m in own if not _importable(m))
    assert not missing, f"{doc.relative_to(ROOT)} names modules that do not exist: {missing}"

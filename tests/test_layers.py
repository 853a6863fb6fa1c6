"""The packages import one way: core at the bottom, the `textcls` CLI at the top, nothing above it.

    textcls (CLI)  ->  export  ->  train, engine  ->  core
    textcls (CLI)  ->  batch   ->  engine  ->  core
    service (HTTP) ->  engine  ->  core
    textcls (CLI)  ->  bench   ->  batch, service, engine, core   (`textcls bench`)
    experiments    ->  bench, export, train, engine, core   (one-off studies, not installed)

A stage that imported the CLI would make it both the top and the bottom of the house again
(issue 10), and the serving path (service/, packed into the Bento with engine/ and core/) must never pull in
train/ or export/, which need torch; the batch job (batch/) runs inside the Bento too, so the same
holds for it. The engine knows nothing of HTTP: nothing below service/ imports it. The product's
benchmarks measure what is served, so they need neither train/ nor export/; a study that does
belongs in experiments/, which nothing imports: the package does not install it (issue 22).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "engine", "service", "train", "export", "batch", "bench", "textcls", "experiments")
# package -> the project packages it may import (besides itself)
ALLOWED = {
    "core": set(),
    "engine": {"core"},
    "service": {"core", "engine"},
    "train": {"core", "engine"},
    "export": {"core", "engine", "train"},
    "batch": {"core", "engine"},
    "bench": {"core", "engine", "service", "batch"},
    "textcls": {"core", "engine", "service", "train", "export", "batch", "bench"},
    "experiments": {"core", "engine", "train", "export", "bench"},
}


def project_imports(package: str) -> dict[str, set[str]]:
    """Project packages imported anywhere in a package (function-level imports too), by file."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names & set(PACKAGES) - {package}
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_go_one_way(package):
    wrong = {f: sorted(names - ALLOWED[package]) for f, names in project_imports(package).items()
             if names - ALLOWED[package]}
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}; found {wrong}"


def test_the_rules_cover_every_package():
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert on_disk == set(PACKAGES), "a new package needs its place in ALLOWED"

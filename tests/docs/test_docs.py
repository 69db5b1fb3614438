"""The documentation is true: the generated reference matches the code, the site builds with
warnings as errors, and every code example on the pages (and in the README) runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.manifest_reference import render
from tests.conftest import REPO

DOCS = REPO / "docs"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Shell lines that set up the reader's machine rather than demonstrate sitsflow.
SETUP_PREFIXES = ("make ", "git ", "cd ", "source ", "pip ", "#")


def code_blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text())]


def pages_with_code() -> list[Path]:
    pages = [*sorted(DOCS.rglob("*.md")), REPO / "README.md"]
    return [p for p in pages if any(lang in ("python", "bash") for lang, _ in code_blocks(p))]


def test_manifest_reference_is_generated_from_the_model() -> None:
    committed = (DOCS / "reference" / "manifest.md").read_text()
    assert committed == render(), (
        "docs/reference/manifest.md is out of date: run "
        "`python -m pipeline.manifest_reference > docs/reference/manifest.md`"
    )


def test_site_builds_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, "mkdocs is a dev dependency: run make test (bootstrap installs it)"
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "tutorial" / "index.html").exists()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder like a user's clone after `make demo`: examples/ and runs/slovenia-demo/."""
    root = tmp_path_factory.mktemp("docs-workspace")
    (root / "examples").symlink_to(REPO / "examples")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "demo", "--store", "runs/slovenia-demo"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield root


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with_code(), ids=lambda p: str(p.relative_to(REPO)))
def test_code_examples_run(page: Path, workspace: Path) -> None:
    """Blocks run in page order, in one namespace per page, from the workspace folder."""
    namespace: dict[str, object] = {"__name__": "__docs__"}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    previous = Path.cwd()
    os.chdir(workspace)
    try:
        for number, (language, code) in enumerate(code_blocks(page)):
            where = f"{page.name} block {number} ({language})"
            if language == "python":
                exec(compile(code, where, "exec"), namespace)
            elif language == "bash":
                for line in code.splitlines():
                    line = line.strip()
                    if not line or line.startswith(SETUP_PREFIXES) or line == "sitsflow demo":
                        continue  # `sitsflow demo` already ran in the workspace fixture
                    done = subprocess.run(
                        line, shell=True, cwd=workspace, env=env, capture_output=True,
                        text=True, timeout=600, check=False,
                    )  # fmt: skip
                    assert done.returncode == 0, f"{where}: {line}\n{done.stdout}{done.stderr}"
    finally:
        os.chdir(previous)

"""The layering contracts of pyproject.toml (docs/design/0008-import-contracts.md) hold, and they
would catch a wrong-way import: a library module importing the manifest, in a scratch copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_package_keeps_its_contracts() -> None:
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_library_module_importing_the_manifest_breaks_a_contract(tmp_path: Path) -> None:
    shutil.copytree(
        REPO / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    data = tmp_path / "pipeline" / "learn" / "data.py"
    data.write_text(data.read_text() + "\nfrom pipeline.manifest import ModelSpec  # wrong way\n")
    done = _lint(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pipeline.learn is not allowed to import pipeline.manifest" in done.stdout
    assert "pipeline.learn.data -> pipeline.manifest" in done.stdout

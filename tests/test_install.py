"""A new user's first hour (issue 16): `make demo` installs the runtime only, the tests carry their
own data, and the numba kernels compiled at install are what later processes load."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = (REPO / "scripts" / "bootstrap.sh").read_text(encoding="utf-8")
MAKEFILE = (REPO / "Makefile").read_text(encoding="utf-8")


def _rule(target: str) -> tuple[list[str], list[str]]:
    """The prerequisites and recipe lines of a Makefile rule."""
    lines = MAKEFILE.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    prerequisites = lines[start].split(":", 1)[1].split("##")[0].split()
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return prerequisites, recipe


def test_make_demo_installs_the_runtime_only() -> None:
    prerequisites, _ = _rule("demo")
    assert prerequisites == ["$(STAMP)"]
    _, recipe = _rule("$(STAMP)")
    assert recipe == ["VENV=$(VENV) scripts/bootstrap.sh"]
    # What the script runs without --dev: everything before the early exit of the runtime path.
    runtime = BOOTSTRAP[: BOOTSTRAP.index("if ! $dev; then")]
    code = "\n".join(line for line in runtime.splitlines() if not line.lstrip().startswith("#"))
    for server_part in ("apt-get", "apt-packages", "npm", "install-helm", "[dev]", "$SUDO"):
        assert server_part not in code.replace('extra="[dev]"', ""), server_part
    assert '"$VENV/bin/sitsflow" warm' in code  # the kernels are compiled at install


def test_make_test_installs_the_test_servers() -> None:
    prerequisites, _ = _rule("test")
    assert prerequisites == ["$(DEV_STAMP)"]
    _, recipe = _rule("$(DEV_STAMP)")
    assert recipe == ["VENV=$(VENV) scripts/bootstrap.sh --dev"]
    dev = BOOTSTRAP[BOOTSTRAP.index("if ! $dev; then") :]
    for part in ("scripts/apt-packages.txt", "install-helm.sh", ".installed-dev"):
        assert part in dev, part
    assert (REPO / ".ci" / "run").read_text(encoding="utf-8").rstrip().endswith("make test")


def test_nothing_reads_data_outside_the_repository() -> None:
    # A user's clone has nothing beside it: the tests' data are in tests/data and examples/.
    # the folder's name is built, so that this guard is not itself a reader of it
    folder = "sha" + "red"
    outside = re.compile(
        rf"""/\s*["']{folder}["']|\.\./{folder}|{folder}/data|parents\[\d\]\.parent"""
    )
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for folder in ("tests", "bench", "examples", "pipeline")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert not offenders


def test_test_data_carry_their_licence_and_provenance() -> None:
    for folder in sorted(p for p in (REPO / "tests" / "data").iterdir() if p.is_dir()):
        assert (folder / "LICENSE").is_file(), folder.name
        assert (folder / "SOURCE.md").is_file(), folder.name


_KERNEL_REPORT = """
import importlib, json, pathlib, re, sys
from numba.core.registry import CPUDispatcher
from pipeline.cube.build import load_kernels
from pipeline.learn.rows import load_kernels as load_rows_kernels
from pipeline.learn.trees import load_kernels as load_trees_kernels
from pipeline.postprocess._kernels import load_kernels as load_postprocess_kernels
load_kernels()
load_rows_kernels()
load_trees_kernels()
load_postprocess_kernels()
report = {}
for folder in ("pipeline/cube", "pipeline/learn", "pipeline/postprocess"):
    for path in sorted(pathlib.Path(folder).rglob("*.py")):
        if not re.search(r"numba\\.(n)?jit\\(", path.read_text(encoding="utf-8")):
            continue
        module = importlib.import_module(".".join(path.with_suffix("").parts))
        for name, value in vars(module).items():
            if not (isinstance(value, CPUDispatcher) and value.__module__ == module.__name__):
                continue
            if value.targetoptions.get("inline") == "always":
                continue  # compiled into its callers, never on its own
            stats = value.stats
            report[f"{module.__name__}.{name}"] = {
                "signatures": len(value.signatures),
                "hits": sum(stats.cache_hits.values()),
                "misses": sum(stats.cache_misses.values()),
                "cache": stats.cache_path,
            }
json.dump(report, sys.stdout)
"""


def test_kernels_compiled_at_install_are_loaded_by_the_next_process(tmp_path: Path) -> None:
    # The install's step (`sitsflow warm`) in one process, a run's first use in another, on a
    # cache of their own: every kernel of the cube, the pixel table and post-processing is cached
    # (cache=True), the warm step runs every one of them, and the second process compiles nothing.
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    install = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "warm"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "numba kernels ready in" in install.stdout and str(tmp_path) in install.stdout
    done = subprocess.run(
        [sys.executable, "-c", _KERNEL_REPORT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    first_run: dict[str, dict[str, object]] = json.loads(done.stdout)
    # 8 of the cube, 2 of the table, 2 of the trees, 5 of post-processing
    assert len(first_run) >= 17, first_run
    for package in ("pipeline.learn.", "pipeline.postprocess."):
        assert any(name.startswith(package) for name in first_run), first_run
    for name, kernel in first_run.items():
        assert kernel["signatures"], (name, kernel)  # the warm step ran it
        assert str(kernel["cache"]).startswith(str(tmp_path)), (name, kernel)  # cache=True
        assert kernel["misses"] == 0, (name, kernel)  # loaded, not compiled
        assert kernel["hits"] == kernel["signatures"], (name, kernel)


def test_the_command_line_prints_its_first_line_before_the_heavy_imports() -> None:
    # `sitsflow run` and `demo` log "planning run ..." before validating the manifest (its models
    # import pydantic and numpy, the estimator check scikit-learn) and before planning (dask,
    # pandas): importing the command line module loads none of them.
    heavy = ("numpy", "pydantic", "dask", "distributed", "pandas", "sklearn", "pipeline.manifest")
    code = f"import sys, pipeline.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"

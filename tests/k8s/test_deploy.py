"""deploy/: the example runs, the kustomize overlays, the image recipe and the CI workflow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.k8s.crd import validate_files
from pipeline.k8s.specs import MANIFEST_DIR
from pipeline.run.dask_spec import RUN_USER, SCRATCH_DIR
from tests.k8s.tools import missing, require_tool

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = sorted((DEPLOY / "kustomize" / "overlays").iterdir())


@pytest.fixture(scope="module")
def kubectl() -> str:
    """The real kubectl (skips without one, fails in CI: tests/k8s/tools.py)."""
    return str(require_tool("kubectl", install=True))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kustomize_overlays_render_valid_runs(kubectl: str, overlay: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig")},
    )
    assert result.returncode == 0, result.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(result.stdout)
    assert validate_files([rendered]) == []
    runs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert runs and all(r["kind"] == "SitsRun" for r in runs)
    if overlay.name == "staging":
        assert {r["metadata"]["namespace"] for r in runs} == {"sitsflow-staging"}
        assert all(r["spec"]["outputs"]["store"].startswith("s3://sitsflow-staging/") for r in runs)
    if overlay.name == "year-2024":
        (run,) = runs
        assert run["metadata"]["name"] == "occitanie-2024"
        assert run["spec"]["period"] == {"start": "2024-01-01", "end": "2024-12-31"}


def test_demo_run_reads_the_demo_the_image_ships() -> None:
    demo = yaml.safe_load((DEPLOY / "examples" / "demo-run.yaml").read_text())
    image_root = "/opt/sitsflow/examples/slovenia/"
    paths = [demo["spec"]["sensors"][0]["catalog"]["url"], demo["spec"]["reference"]["path"]]
    for path in paths:
        assert path.startswith(image_root)
        assert (REPO / "examples" / "slovenia" / path.removeprefix(image_root)).exists(), path
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY examples/slovenia /opt/sitsflow/examples/slovenia" in dockerfile


def test_example_runs_keep_credentials_out() -> None:
    for path in (DEPLOY / "examples").glob("*.yaml"):
        text = path.read_text().lower()
        for word in ("aws_secret", "access_key", "password", "token:"):
            assert word not in text, f"{path.name} mentions {word}"


def test_dockerfile_copies_what_exists_and_runs_as_the_pods_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", dockerfile, re.M):
        for item in source.split():
            assert (REPO / item).exists(), f"COPY {item}: not in the repository"
    assert f"USER {RUN_USER}:{RUN_USER}" in dockerfile
    assert f"--uid {RUN_USER}" in dockerfile
    # The pods' args are commands: tini, then the entrypoint that seeds the numba cache, exec them.
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/sitsflow-entrypoint"]' in dockerfile
    assert (DEPLOY / "entrypoint.sh").read_text().rstrip().endswith('exec "$@"')
    assert f"HOME={SCRATCH_DIR}" in dockerfile
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for kept in ("!pipeline/", "!examples/slovenia/", "!requirements/constraints.txt"):
        assert kept in ignore


def test_docs_say_the_image_is_built_and_pushed_by_the_user() -> None:
    """No image is published: the docs must give the exact build command, the one the
    Dockerfile itself names (tests/image builds it here with buildah)."""
    (build,) = re.findall(
        r"^#\s+(docker build -f deploy/Dockerfile .*)$", (DEPLOY / "Dockerfile").read_text(), re.M
    )
    tag = build.split(" -t ")[1].split()[0]
    for page in (REPO / "docs" / "kubernetes.md", DEPLOY / "README.md"):
        text = page.read_text()
        assert build in text, f"{page.name} lacks `{build}`"
        assert f"docker push {tag}" in text, page.name
        assert "no published" in " ".join(text.lower().split()), page.name


def workflow() -> dict[Any, Any]:
    return dict(yaml.safe_load((DEPLOY / "ci" / "github-actions.yaml").read_text()))


def test_ci_workflow_validates_applies_and_waits() -> None:
    flow = workflow()
    assert set(flow["jobs"]) == {"manifests", "validate", "apply"}
    assert flow["jobs"]["apply"]["needs"] == ["manifests", "validate"]
    for job in flow["jobs"].values():
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), step
    scripts = "\n".join(s.get("run", "") for j in flow["jobs"].values() for s in j["steps"])
    assert "python -m pipeline.k8s.admission" in scripts
    assert "python -m pipeline.k8s.crd --validate" in scripts
    assert "kubectl apply --server-side --dry-run=server" in scripts
    assert "bash ci/sitsrun.sh" in scripts  # apply and wait (tests/k8s/test_ci.py runs it)
    waits = (REPO / "deploy" / "ci" / "sitsrun.sh").read_text()
    assert ".status.observedGeneration" in waits and ".status.lastError" in waits
    assert '@.type=="Succeeded"' in waits and '@.type=="Failed"' in waits
    assert flow["jobs"]["apply"]["env"]["KUBECONFIG_DATA"] == "${{ secrets.KUBECONFIG }}"
    assert "AWS_SECRET" not in scripts


def test_ci_workflow_installs_sitsflow_from_its_tagged_sources() -> None:
    """sitsflow is not on PyPI: the workflow checks out the tagged sources and installs them."""
    import tomllib

    flow = workflow()
    steps = flow["jobs"]["validate"]["steps"]
    scripts = "\n".join(s.get("run", "") for j in flow["jobs"].values() for s in j["steps"])
    assert not re.search(r"pip install[^\n]* \"?sitsflow\b", scripts), "no sitsflow on PyPI"
    (sources,) = [s for s in steps if s.get("with", {}).get("repository")]
    assert sources["uses"].startswith("actions/checkout@")
    assert sources["with"] == {
        "repository": "${{ env.SITSFLOW_REPOSITORY }}",
        "ref": "${{ env.SITSFLOW_REF }}",
        "path": ".sitsflow",
    }
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert flow["env"]["SITSFLOW_REF"] == f"v{version}"  # the release this repository is
    (install,) = [s["run"] for s in steps if "./.sitsflow" in s.get("run", "")]
    assert "pip install -c .sitsflow/requirements/constraints.txt ./.sitsflow" in install
    assert (REPO / "requirements" / "constraints.txt").exists()
    assert (REPO / "pyproject.toml").exists()  # what `pip install .sitsflow` builds
    # The pinned CPU torch, as in the image: the constraint and the install line agree.
    constraints = (REPO / "requirements" / "constraints.txt").read_text().splitlines()
    (torch,) = [line for line in constraints if line.startswith("torch==")]
    assert f'"{torch}"' in install
    assert steps.index(sources) < next(i for i, s in enumerate(steps) if s.get("run") == install)


def test_ci_workflow_scripts_are_valid_bash(tmp_path: Path) -> None:
    for job in workflow()["jobs"].values():
        for step in job["steps"]:
            if "run" not in step:
                continue
            script = re.sub(r"\$\{\{[^}]*\}\}", "x", step["run"])  # GitHub expressions
            path = tmp_path / "step.sh"
            path.write_text(script)
            result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
            assert result.returncode == 0, f"{step.get('name')}: {result.stderr}"


def test_ci_validation_commands_pass_on_the_examples() -> None:
    """What the workflows' validate jobs run, on the example runs: the operator's admission
    (their inputs are in the image or a bucket, not here) and the CRD's schema."""
    examples = [DEPLOY / "examples" / n for n in ("demo-run.yaml", "production-s2-theia.yaml")]
    python = sys.executable  # the interpreter running the tests, wherever its venv is
    result = subprocess.run(
        [str(python), "-m", "pipeline.k8s.admission", *map(str, examples)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert validate_files(examples) == []
    # A workstation manifest (relative paths) is refused, as the operator would.
    local = REPO / "examples" / "slovenia" / "run.yaml"
    result = subprocess.run(
        [str(python), "-m", "pipeline.k8s.admission", str(local)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "is a relative path" in result.stderr


def test_driver_manifest_mount_is_where_the_job_reads_it() -> None:
    from pipeline.k8s.config import OperatorConfig
    from pipeline.k8s.specs import RunRef, build_driver_job

    job = build_driver_job(RunRef("x", "ns", "uid"), OperatorConfig())
    (container,) = job["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["manifest"] == MANIFEST_DIR
    assert container["args"][2].startswith(MANIFEST_DIR + "/")


def test_install_helm_is_a_no_op_once_installed() -> None:
    if not (REPO / ".venv" / "bin" / "helm").exists():
        missing("helm is not installed in .venv (scripts/bootstrap.sh installs it)")
    result = subprocess.run(
        [str(REPO / "scripts" / "install-helm.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VENV": ".venv"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""  # nothing fetched, nothing rewritten

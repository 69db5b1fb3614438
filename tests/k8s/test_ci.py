"""The CI examples (deploy/ci): valid for GitHub Actions and GitLab CI (the schemas both publish,
vendored by check-jsonschema from PyPI: offline), triggered by changes under runs/ (nested files
too) or by hand, bounded within what hosted runners allow, secrets and inputs passed through the
environment only; and the shared apply-and-wait script, run for real under bash.

The script talks to kubectl; the API emulator the operator tests use does not serve kubectl's
discovery documents, so the script runs here against a stand-in `kubectl` that replays what an
API server answers (a transient failure, a status of the previous generation, then the run's)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CI = REPO / "deploy" / "ci"
GITHUB = CI / "github-actions.yaml"
GITLAB = CI / "gitlab-ci.yml"
SCRIPT = CI / "sitsrun.sh"
HOSTED_GITHUB_MINUTES = 360  # a hosted runner stops a job after 6 h
GITLAB_SHARED_SECONDS = 3 * 3600  # GitLab.com shared runners: 3 h at most


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(path: Path) -> dict[Any, Any]:
    return dict(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    ("schema", "path"),
    [("vendor.github-workflows", GITHUB), ("vendor.gitlab-ci", GITLAB)],
    ids=["github", "gitlab"],
)
def test_the_examples_are_valid_for_their_ci_system(
    schema: str, path: Path, tmp_path: Path
) -> None:
    result = check_jsonschema(schema, path)
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator does refuse a broken file (a misspelt key).
    broken = tmp_path / path.name
    text = path.read_text()
    broken.write_text(
        text.replace("timeout-minutes:", "timeout-minute:").replace(
            "timeout: 3h", "timeout: 3h\n  scirpt: []"
        )
    )
    assert check_jsonschema(schema, broken).returncode != 0


def test_github_triggers_bounds_and_environment_only_inputs() -> None:
    workflow = load(GITHUB)
    on = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert on["push"]["paths"] == ["runs/**"] and on["pull_request"]["paths"] == ["runs/**"]
    assert "manifest" in on["workflow_dispatch"]["inputs"]
    apply = workflow["jobs"]["apply"]
    assert apply["timeout-minutes"] < HOSTED_GITHUB_MINUTES
    assert int(apply["env"]["WAIT_SECONDS"]) < apply["timeout-minutes"] * 60
    assert apply["if"] == "github.event_name != 'pull_request'"
    for job in workflow["jobs"].values():
        assert job["timeout-minutes"] <= HOSTED_GITHUB_MINUTES
        for step in job["steps"]:
            # Expressions in a script are pasted into its text (an injection); env is not.
            assert "${{" not in step.get("run", ""), step
    assert apply["env"]["KUBECONFIG_DATA"] == "${{ secrets.KUBECONFIG }}"
    # kubectl gets a namespace only when one is given: an overlay's own namespace wins.
    assert not re.search(r'kubectl [^\n]*-n "\$NAMESPACE"', GITHUB.read_text())


def test_gitlab_triggers_bounds_and_environment_only_inputs() -> None:
    pipeline = load(GITLAB)
    rules = pipeline["workflow"]["rules"]
    assert any('$CI_PIPELINE_SOURCE == "web"' in r["if"] for r in rules)
    assert sum(r.get("changes") == ["runs/**/*"] for r in rules) == 2
    apply = pipeline["apply"]
    hours = int(apply["timeout"].removesuffix("h"))
    assert hours * 3600 <= GITLAB_SHARED_SECONDS
    assert int(apply["variables"]["WAIT_SECONDS"]) < hours * 3600
    for job in ("validate", "apply"):
        script = "\n".join(str(line) for line in pipeline[job]["script"])
        assert "KUBECONFIG" not in script  # a File variable: kubectl reads $KUBECONFIG itself


def git(folder: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    return subprocess.run(
        ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("git") is None, reason="jq/git")
def test_a_change_in_a_nested_folder_under_runs_is_picked(tmp_path: Path) -> None:
    """The GitHub step that lists the manifests, run on a repository with nested runs."""
    (tmp_path / "runs" / "2023").mkdir(parents=True)
    (tmp_path / "runs" / "a.yaml").write_text("a: 1\n")
    (tmp_path / "notes.yaml").write_text("n: 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "first")
    base = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "runs" / "2023" / "occitanie.yaml").write_text("b: 1\n")
    (tmp_path / "runs" / "a.yaml").write_text("a: 2\n")
    (tmp_path / "notes.yaml").write_text("n: 2\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "second")
    head = git(tmp_path, "rev-parse", "HEAD")
    (step,) = [s for s in load(GITHUB)["jobs"]["manifests"]["steps"] if s.get("id") == "list"]
    output = tmp_path / "github_output"
    env = {
        **os.environ,
        "EVENT": "push",
        "INPUT_MANIFEST": "",
        "BASE": base,
        "HEAD": head,
        "GITHUB_OUTPUT": str(output),
    }
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, check=True)
    assert output.read_text().strip() == 'files=["runs/2023/occitanie.yaml","runs/a.yaml"]'


# --- the apply-and-wait script ------------------------------------------------------------------

STAND_IN = """#!/usr/bin/env bash
# Replays one answer per call from $ANSWERS ("FAIL <message>" fails), logging the arguments.
printf '%s\\n' "$*" >> "$CALLS"
answer=$(head -n 1 "$ANSWERS"); sed -i 1d "$ANSWERS"
case "$answer" in FAIL*) echo "${answer#FAIL }" >&2; exit 1;; esac
printf '%s' "$answer"
"""


def run_script(tmp_path: Path, answers: list[str], **env: str) -> tuple[int, str, list[str]]:
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(STAND_IN)
    kubectl.chmod(0o755)
    (tmp_path / "answers").write_text("\n".join(answers) + "\n")
    manifest = tmp_path / "run.yaml"
    manifest.write_text("kind: SitsRun\n")
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={
            **os.environ,
            "KUBECTL": str(kubectl),
            "ANSWERS": str(tmp_path / "answers"),
            "CALLS": str(tmp_path / "calls"),
            "MANIFEST": str(manifest),
            "POLL_SECONDS": "0",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = (tmp_path / "calls").read_text().splitlines()
    return result.returncode, result.stdout + result.stderr, calls


def status(generation: int, phase: str, succeeded: str = "False", failed: str = "False") -> str:
    return f"{generation}|{phase}|50%|{succeeded}|{failed}|the driver runs"


def test_the_script_waits_for_the_run_of_this_generation_through_transient_failures(
    tmp_path: Path,
) -> None:
    code, output, calls = run_script(
        tmp_path,
        [
            "occitanie-2023 maps 2",  # the apply: name, namespace, generation
            "FAIL Unable to connect to the server: net/http: TLS handshake timeout",
            status(1, "Succeeded", succeeded="True"),  # the previous spec's result: not ours
            status(2, "Running"),
            status(2, "Succeeded", succeeded="True"),
            '{"labels":"s3://maps/occitanie-2023/maps/labels.tif"}',
        ],
    )
    assert code == 0, output
    assert "retrying" in output and "waiting for the operator to take generation 2" in output
    assert "s3://maps/occitanie-2023/maps/labels.tif" in output
    assert calls[0].startswith("apply --server-side -f ")  # no --namespace: the manifest's
    assert "--namespace maps" in calls[1]


def test_the_script_fails_with_the_runs_error_and_stops_at_its_bound(tmp_path: Path) -> None:
    code, output, calls = run_script(
        tmp_path,
        [
            "occitanie-2023 maps 1",
            status(1, "Failed", failed="True"),
            "spec.reference.path: the file is missing. Fix: upload it",
        ],
        NAMESPACE="maps",
    )
    assert code == 1 and "spec.reference.path: the file is missing" in output
    assert "--namespace maps" in calls[0]
    code, output, _ = run_script(
        tmp_path, ["occitanie-2023 maps 1", status(1, "Running")], WAIT_SECONDS="0"
    )
    assert code == 2 and "it goes on in the cluster" in output
    code, output, _ = run_script(tmp_path, ["FAIL forbidden"] * 3, KUBECTL_TRIES="2")
    assert code == 3 and re.search(r"kubectl apply failed 2 times", output)

"""Pure status rules: the phase from the driver Job, the driver's error from its pods, the
operator's config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.k8s.config import OperatorConfig, OperatorConfigError, load_config
from pipeline.k8s.status import (
    driver_error,
    driver_stuck,
    job_state,
    output_urls,
    progress_text,
)


def job(**status: Any) -> dict[str, Any]:
    return {"status": status}


def condition(kind: str, message: str = "", status: str = "True") -> dict[str, Any]:
    return {"type": kind, "status": status, "message": message}


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ({}, "Pending"),
        ({"active": 1}, "Running"),
        ({"active": 0, "failed": 1}, "Pending"),  # a retry pod not yet running
        ({"conditions": [condition("Complete")]}, "Succeeded"),
        ({"conditions": [condition("SuccessCriteriaMet"), condition("Complete")]}, "Succeeded"),
        ({"conditions": [condition("Failed", "BackoffLimitExceeded")]}, "Failed"),
        ({"conditions": [condition("FailureTarget", "x")], "active": 1}, "Failed"),
        ({"conditions": [condition("Failed", status="False")], "active": 1}, "Running"),
    ],
)
def test_phase_follows_the_job(status: dict[str, Any], phase: str) -> None:
    assert job_state(job(**status)).phase == phase


def pod(name: str, created: str, state: dict[str, Any], last: dict[str, Any] | None = None) -> Any:
    status: dict[str, Any] = {"name": "driver", "state": state}
    if last:
        status["lastState"] = last
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"containerStatuses": [status]},
    }


def test_the_newest_failed_pods_message_is_the_error() -> None:
    old = pod("a", "2026-01-01T00:00:00Z", {"terminated": {"exitCode": 1, "message": "old"}})
    new = pod("b", "2026-01-01T01:00:00Z", {"terminated": {"exitCode": 2, "message": " fix me \n"}})
    assert driver_error([old, new]) == "fix me"


def test_a_json_lines_log_gives_its_error_messages() -> None:
    tail = "\n".join(
        [
            '{"ts": "t", "level": "info", "event": "stage.started", "message": "cube ..."}',
            '{"ts": "t", "level": "error", "event": "error", "message": "error: spec.reference: '
            'file s3://b/r.gpkg does not exist. Fix: check the path."}',
        ]
    )
    failed = pod("a", "t", {"terminated": {"exitCode": 2, "message": tail}})
    assert driver_error([failed]) == (
        "error: spec.reference: file s3://b/r.gpkg does not exist. Fix: check the path."
    )
    traceback = "Traceback (most recent call last):\n  File x\nValueError: boom"
    crashed = pod("a", "t", {"terminated": {"exitCode": 1, "message": traceback}})
    assert driver_error([crashed]) == traceback


def test_a_scheduler_that_never_answered_is_the_error() -> None:
    waited = {
        "metadata": {"name": "a", "creationTimestamp": "t"},
        "status": {
            "initContainerStatuses": [
                {
                    "name": "wait-for-scheduler",
                    "state": {"terminated": {"exitCode": 1, "message": "did not answer in 1200 s"}},
                }
            ],
            "containerStatuses": [
                {"name": "driver", "state": {"waiting": {"reason": "PodInitializing"}}}
            ],
        },
    }
    assert driver_error([waited]) == "did not answer in 1200 s"


def test_an_oom_kill_says_which_value_to_raise() -> None:
    killed = pod("a", "t", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    assert driver_error([killed]) == (
        "the driver exited with code 137 (OOMKilled); raise the chart's runs.driverResources "
        "memory limit"
    )


def test_a_restarted_container_reports_its_last_failure() -> None:
    running = pod(
        "a", "t", {"running": {}}, last={"terminated": {"exitCode": 3, "message": "boom"}}
    )
    assert driver_error([running]) == "boom"
    assert driver_error([pod("a", "t", {"terminated": {"exitCode": 0}})]) is None
    assert driver_error([]) is None


def test_a_driver_that_waits_for_a_person_is_reported() -> None:
    waiting = pod("a", "t", {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}})
    assert driver_stuck([waiting]) == "the image cannot be pulled (ImagePullBackOff: not found)"
    creating = pod("a", "t", {"waiting": {"reason": "ContainerCreating"}})
    assert driver_stuck([creating]) is None


def test_output_urls_are_under_the_store() -> None:
    urls = output_urls("s3://bucket/runs/x/")
    assert urls["labels"] == "s3://bucket/runs/x/maps/labels.tif"
    assert urls["report"] == "s3://bucket/runs/x/report/report.html"
    assert urls["metrics"] == "s3://bucket/runs/x/report/metrics.json"
    assert output_urls("/data/runs/x")["summary"] == "/data/runs/x/run.json"


def test_progress_is_a_clamped_percentage() -> None:
    assert [progress_text(v) for v in (-1, 0, 0.424, 1, 3)] == ["0%", "0%", "42%", "100%", "100%"]


# --- the operator's configuration file ---------------------------------------------------------


def test_config_defaults_when_no_file_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITSFLOW_OPERATOR_CONFIG", raising=False)
    assert load_config() == OperatorConfig()


def test_config_is_read_from_the_file_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"image": "r/s:1", "credentialsSecret": "s3", "pollSeconds": 3}))
    monkeypatch.setenv("SITSFLOW_OPERATOR_CONFIG", str(path))
    config = load_config()
    assert (config.image, config.credentials_secret, config.poll_seconds) == ("r/s:1", "s3", 3)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "cannot be read"),
        ('{"imagee": "x"}', "imagee"),
        ('{"pollSeconds": 0}', "pollSeconds"),
        ('{"env": {"1BAD": "x"}}', "not valid variable names"),
        ('{"credentialsSecret": "Bad_Name"}', "credentialsSecret"),
    ],
)
def test_a_bad_config_names_the_problem_and_the_fix(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(OperatorConfigError) as error:
        load_config(path)
    assert expected in str(error.value)
    assert "Fix:" in str(error.value)


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OperatorConfigError, match="cannot be read"):
        load_config(tmp_path / "absent.json")

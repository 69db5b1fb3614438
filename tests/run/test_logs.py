"""Structured logs and progress: JSON lines with rates and ETAs, text on terminals, no secret."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from rich.console import Console

from pipeline.run.logs import MASK, Redactor, RunLog, bridge_logging, resolve_format
from pipeline.run.progress import Progress

ENV = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "STAC_API_TOKEN": "tok-123456789",
    "AWS_REGION": "eu-west-1",
    "PWD": "/home/user",
}


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_secrets_are_masked_everywhere() -> None:
    redact = Redactor.from_environment(ENV)
    text = (
        "s3://bucket with key AKIAIOSFODNN7EXAMPLE and secret "
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY; https://user:hunter22@host/x; "
        "https://b.blob.core.windows.net/c/x.tif?sv=2021&sig=abcDEF%2B123&se=2030; "
        "https://s3.amazonaws.com/b/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA/x; "
        "region eu-west-1 in /home/user"
    )
    clean = redact(text)
    for secret in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "hunter22", "abcDEF", "deadbeef"):
        assert secret not in clean
    assert clean.count(MASK) >= 5
    assert "eu-west-1" in clean and "/home/user" in clean  # settings are not secrets
    assert redact.clean({"a": ["tok-123456789"], "b": 3}) == {"a": [MASK], "b": 3}


def test_json_events_are_one_line_each_and_redacted() -> None:
    stream = io.StringIO()
    log = RunLog("json", stream=stream, redactor=Redactor.from_environment(ENV), run="demo")
    log.info("reading s3://b/x with AKIAIOSFODNN7EXAMPLE", "catalog.read", url="tok-123456789")
    log.warning("multi\nline")
    first, second = lines(stream)
    assert first["event"] == "catalog.read" and first["run"] == "demo"
    assert first["level"] == "info" and "ts" in first
    assert "AKIA" not in json.dumps(first) and first["url"] == MASK
    assert second["level"] == "warning" and second["message"] == "multi\nline"


def test_text_mode_writes_readable_lines() -> None:
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    log = RunLog("text", console=console, redactor=Redactor(set()))
    log.warning("a [bold]literal[/bold] bracket")
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert out.strip() == "warning: a [bold]literal[/bold] bracket"


def test_auto_format_is_json_off_a_terminal() -> None:
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"


def test_library_warnings_go_through_the_run_log() -> None:
    stream = io.StringIO()
    bridge_logging(RunLog("json", stream=stream, redactor=Redactor.from_environment(ENV)),
                   names=("sitsflow-test-logger",))  # fmt: skip
    logging.getLogger("sitsflow-test-logger").warning("worker lost, key %s", "AKIAIOSFODNN7EXAMPLE")
    logging.getLogger("sitsflow-test-logger").info("not shown")
    (event,) = lines(stream)
    assert event["logger"] == "sitsflow-test-logger" and MASK in event["message"]


def test_progress_events_give_counts_rate_and_eta(monkeypatch: Any) -> None:
    clock = [100.0]
    monkeypatch.setattr("pipeline.run.progress.time.monotonic", lambda: clock[0])
    stream = io.StringIO()
    progress = Progress(log=RunLog("json", stream=stream), interval=10.0)
    progress.stage_started("cube")
    bar = progress.bar("cube chunks", 8)
    for _ in range(4):
        clock[0] += 2.0
        bar.advance()
    clock[0] += 5.0
    bar.advance()  # 13 s since the start, 8 s since the last report: no event yet
    for _ in range(3):
        clock[0] += 1.0
        bar.advance()
    progress.stage_finished("cube", 16.0)
    events = lines(stream)
    reports = [e for e in events if e["event"] == "stage.progress"]
    # One report after 10 s (5 done at t=13: rate 5/13), one at completion.
    assert [r["done"] for r in reports] == [5, 8]
    assert reports[0]["stage"] == "cube" and reports[0]["total"] == 8
    assert abs(reports[0]["rate_per_s"] - 5 / 13) < 1e-3
    assert abs(reports[0]["eta_s"] - 3 / (5 / 13)) < 0.1
    assert reports[1]["eta_s"] == 0.0
    assert events[0]["event"] == "stage.started" and events[-1]["event"] == "stage.finished"
    assert not progress.live

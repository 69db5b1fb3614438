"""The reliability suite's own report: how many malformed manifests were refused."""

from __future__ import annotations

from typing import Any

REFUSED: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REFUSED:
        terminalreporter.write_line(
            f"reliability: {len(REFUSED)} malformed manifest(s) refused before anything was "
            "written (field, value and fix in each message)"
        )

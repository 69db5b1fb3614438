"""Structured run logs: readable lines on a terminal, JSON lines elsewhere, never a secret.

Every event has a name (``stage.finished``), a human message and fields. In JSON mode each event
is one line ``{"ts", "level", "event", "run", "message", ...fields}`` on stderr, for log
collectors (Kubernetes, CI). Before anything is written, every string goes through a
``Redactor``: credential values (``pipeline.secrets``: credential and secret-looking environment
variables, headers from the environment; whole or any token of them), URL passwords and
signed-URL query parameters are replaced by ``***``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from rich.console import Console

from pipeline import secrets as credentials

LogFormat = Literal["auto", "json", "text"]

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/:@\s]*:)[^@/\s]+@")
_SIGNED_QUERY = re.compile(
    r"(?P<head>[?&](?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|sig|signature|"
    r"token|access_token|se|sv|skoid|sktid|skt|ske|sks|skv|st|sp|sr|spr)=)[^&\s\"']+",
    re.IGNORECASE,
)
MASK = credentials.MASK


class Redactor:
    """Removes secrets from text: known secret values (and their parts), URL passwords,
    signed-URL parameters. Values registered later (a catalog's headers, read while planning)
    are masked too: the registry is read at each call."""

    def __init__(self, secrets: set[str] | None = None) -> None:
        self._secrets: set[str] = set()
        for value in secrets or set():
            self._secrets.update(credentials.parts(value))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        return cls(credentials.known(environ))

    def __call__(self, text: str) -> str:
        text = credentials.mask(text, self._secrets | credentials.known({}))
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
        return _SIGNED_QUERY.sub(lambda m: m.group("head") + MASK, text)

    def clean(self, value: Any) -> Any:
        """``value`` with every string inside redacted (dicts, lists, tuples walked)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {str(k): self.clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.clean(v) for v in value]
        return value


def resolve_format(option: LogFormat, stream: TextIO | None = None) -> Literal["json", "text"]:
    """``auto``: JSON when stderr is not a terminal (CI, containers, pipes), text otherwise."""
    if option != "auto":
        return option
    target = stream if stream is not None else sys.stderr
    isatty = getattr(target, "isatty", None)
    return "text" if callable(isatty) and isatty() else "json"


class RunLog:
    """Emits events as text (through a rich console) or JSON lines, redacted."""

    def __init__(
        self,
        fmt: Literal["json", "text"] = "text",
        *,
        console: Console | None = None,
        stream: TextIO | None = None,
        redactor: Redactor | None = None,
        run: str | None = None,
    ) -> None:
        self.fmt = fmt
        self.console = console or Console(stderr=True)
        self._stream = stream
        self.redact = redactor or Redactor.from_environment()
        self.run = run

    @property
    def json(self) -> bool:
        return self.fmt == "json"

    def event(self, event: str, message: str, *, level: str = "info", **fields: Any) -> None:
        message = self.redact(message)
        if self.fmt == "json":
            record: dict[str, Any] = {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "level": level,
                "event": event,
            }
            if self.run:
                record["run"] = self.run
            record["message"] = message
            record.update(self.redact.clean(fields))
            line = json.dumps(record, default=str, ensure_ascii=False)
            stream = self._stream if self._stream is not None else sys.stderr
            stream.write(line + "\n")
            stream.flush()
            return
        prefix = {"warning": "[yellow]warning:[/yellow] ", "error": "[bold red]error:[/bold red] "}
        self.console.print(
            prefix.get(level, "") + _escape(message), highlight=False, soft_wrap=True
        )

    def info(self, message: str, event: str = "info", **fields: Any) -> None:
        self.event(event, message, **fields)

    def warning(self, message: str, event: str = "warning", **fields: Any) -> None:
        self.event(event, message, level="warning", **fields)

    def error(self, message: str, event: str = "error", **fields: Any) -> None:
        self.event(event, message, level="error", **fields)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class _Bridge(logging.Handler):
    """Sends records of Python loggers (distributed, sitsflow modules) through a RunLog."""

    def __init__(self, log: RunLog) -> None:
        super().__init__(level=logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in a library must not stop the run
            message = str(record.msg)
        if record.levelno >= logging.ERROR:
            level = "error"
        elif record.levelno >= logging.WARNING:
            level = "warning"
        else:
            level = "info"
        self._log.event("log", message, level=level, logger=record.name)


#: Loggers whose info lines are shown too: catalog retries and their causes, item counts.
INFO_LOGGERS = ("pipeline.catalog", "pipeline.samples.reference")


def bridge_logging(log: RunLog, names: tuple[str, ...] = ("distributed", "pipeline")) -> None:
    """Route warnings and errors of these loggers through ``log`` (replacing their handlers),
    and the info lines of ``INFO_LOGGERS`` (which pass through their parent's handler)."""
    handler = _Bridge(log)
    for name in names:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _Bridge | logging.StreamHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    for name in INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)

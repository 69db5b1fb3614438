"""Pydantic validation errors explained: each problem with its field path and a fix."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from pipeline.manifest.run import RunManifest


def _field_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(loc: Sequence[int | str]) -> Any:
    """The pydantic model that holds the key at the end of ``loc`` (None when unknown)."""
    current: Any = RunManifest
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            continue  # a key of a mapping field (a band's name): the model stays the same
        current = _model_of(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _allowed_keys(loc: Sequence[int | str]) -> list[str]:
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []


def _description(loc: Sequence[int | str]) -> str | None:
    """The field's documentation, to show what a good value looks like."""
    keys = [p for p in loc if isinstance(p, str)]
    model = _model_at([p for p in loc if not isinstance(p, int)])
    if model is None or not keys:
        return None
    info = model.model_fields.get(keys[-1])
    return info.description if info is not None else None


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _fix_for(err: Any, loc: Sequence[int | str]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        key = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{hint}remove the key or use one of: {', '.join(allowed)}"
    if kind == "missing":
        return "add this field (see examples/slovenia/run.yaml)"
    if kind == "literal_error":
        return f"use one of {ctx.get('expected')}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        described = _description(loc)
        return "use a value in the allowed range" + (
            f" ({described.rstrip('.')})" if described else ""
        )
    if kind == "string_pattern_mismatch":
        described = _description(loc)
        if described:
            return f"give a value as described: {described.rstrip('.')}"
        return f"use a value matching {ctx.get('pattern')}"
    if kind == "finite_number":
        return "give a finite number (.nan and .inf are not values a run can use)"
    if kind.startswith(("int_", "float_", "bool_", "date_", "string_type", "dict_", "list_")):
        return "give a value of the expected type"
    if kind == "too_short":
        return "give at least one entry"
    return "correct the value"


def _explain(exc: ValidationError, data: Any, source: str) -> str:
    lines = [f"{source} is not a valid SitsRun manifest ({exc.error_count()} problem(s)):"]
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = _field_path(loc)
        msg = err["msg"]
        if err["type"] == "value_error":
            # Our validators phrase their messages as "<problem>; <fix>", optionally starting
            # with "[key] " to name the key of the section they checked (see _at).
            text = msg.removeprefix("Value error, ")
            named = re.match(r"^\[([A-Za-z_][\w.\[\]]*)\] ", text)
            if named:
                path = f"{path}.{named.group(1)}" if loc else named.group(1)
                text = text[named.end() :]
            problem, _, fix = text.rpartition("; ")
            if problem:
                lines.append(f"  - {path}: {problem}. Fix: {fix}.")
            else:
                lines.append(f"  - {path}: {fix}.")
            continue
        got = ""
        if err["type"] != "missing":
            shown = json.dumps(err.get("input"), default=str)
            shown = re.sub(r"(://[^/:@\s\"]*:)[^@/\s\"]+@", r"\1***@", shown)  # URL passwords
            got = f" (got {shown[:80]})"
        lines.append(f"  - {path}: {msg}{got}. Fix: {_fix_for(err, loc)}.")
    return "\n".join(lines)

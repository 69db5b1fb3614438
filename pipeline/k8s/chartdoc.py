"""The values table of the chart's README, generated from values.yaml and its ``# --`` comments.

    python -m pipeline.k8s.chartdoc --write   # rewrite the table in helm/sitsflow/README.md
    python -m pipeline.k8s.chartdoc --check   # exit 1 when the README is out of date (CI)

A comment that starts with ``# --`` (continued by the ``#`` lines right after it) documents the key
on the next line, as helm-docs does; the default is the value in values.yaml.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "sitsflow"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


@dataclass(frozen=True)
class ValueDoc:
    key: str
    kind: str
    default: str
    description: str


def documented_values(values_yaml: str) -> list[ValueDoc]:
    """Every key that has a ``# --`` comment, with its dotted path, type and default."""
    values = yaml.safe_load(values_yaml) or {}
    docs: list[ValueDoc] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] | None = None
    for line in values_yaml.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and comment is not None:
            comment.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if not match:
            if stripped and not stripped.startswith("#"):
                comment = None  # a list item or a wrapped value: not a key
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if comment is not None:
            path = [k for _, k in stack]
            value = _at(values, path)
            docs.append(ValueDoc(".".join(path), _kind(value), _render(value), " ".join(comment)))
        comment = None
    return docs


def _at(values: Any, path: Sequence[str]) -> Any:
    for key in path:
        values = values[key]
    return values


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}[
        type(value)
    ]


def _render(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return f"`{text}`"


def values_table(values_yaml: str) -> str:
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    docs = documented_values(values_yaml)
    parents = {d.key for d in docs if any(o.key.startswith(d.key + ".") for o in docs)}
    for doc in docs:
        description = doc.description.replace("|", "\\|")
        default = "(keys below)" if doc.key in parents else doc.default
        rows.append(f"| `{doc.key}` | {doc.kind} | {default} | {description} |")
    return "\n".join(rows)


def render_readme(readme: str, values_yaml: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"the README has no {START} ... {END} section to fill")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{values_table(values_yaml)}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.k8s.chartdoc")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the README's table")
    action.add_argument("--check", action="store_true", help="exit 1 if it is out of date")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    readme_path = args.chart / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    fresh = render_readme(readme, (args.chart / "values.yaml").read_text(encoding="utf-8"))
    if args.write:
        readme_path.write_text(fresh, encoding="utf-8")
        return 0
    if fresh != readme:
        print(
            f"{readme_path} does not match values.yaml; run `python -m pipeline.k8s.chartdoc "
            "--write` and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

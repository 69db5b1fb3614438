"""Every error field the library raises is a domain key of the one table, and the edges show it
as the user knows it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.errors import CatalogError, ModelError
from pipeline.manifest.fields import FIELDS, domain_key, locate, place_of

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"
# field="..." as a keyword argument (kopf's own field="spec" filter is not an error field).
LITERAL = re.compile(r"""\bfield\s*=\s*(["'])([^"'{}]*)\1""")


def _literals() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PIPELINE.rglob("*.py")):
        # The manifest speaks in manifest paths; the CLI is an edge and names its own options.
        if path.relative_to(PIPELINE).parts[0] in ("manifest", "cli.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "kopf." in line:
                continue
            for match in LITERAL.finditer(line):
                found.append((str(path.relative_to(PIPELINE.parent)), number, match.group(2)))
    return found


def test_every_field_literal_is_a_domain_key() -> None:
    literals = _literals()
    assert len(literals) > 20  # the grep found the library's errors
    unknown = [f"{p}:{n}: {key!r}" for p, n, key in literals if domain_key(key) not in FIELDS]
    assert not unknown, (
        "fields that are not domain keys of pipeline.manifest.fields:\n" + "\n".join(unknown)
    )


def test_no_manifest_path_outside_the_manifest() -> None:
    spec_paths = [f"{p}:{n}" for p, n, key in _literals() if key.startswith("spec.")]
    assert not spec_paths


@pytest.mark.parametrize(
    ("key", "command", "flags", "expected"),
    [
        ("model.params", "run", None, "spec.model.params"),
        ("sensors[1].catalog.url", "run", None, "spec.sensors[1].catalog.url"),
        ("name", "run", None, "metadata.name"),
        ("model.params", "crossval", None, "--param"),
        ("folds", "crossval", None, "--folds"),
        ("model.kind", "crossval", None, "model.kind"),  # no manifest, no option: as it is
        ("model.estimator", "train", ["--estimator"], "--estimator"),
        ("model.estimator", "train", [], "spec.model.estimator"),  # the manifest's model
        ("group_by", "run", None, "group_by"),
        ("not.a.key", "run", None, "not.a.key"),
    ],
)
def test_place_of(key: str, command: str, flags: list[str] | None, expected: str) -> None:
    assert place_of(key, command=command, flags=flags) == expected  # type: ignore[arg-type]


def test_locate_keeps_the_error_and_rewrites_field_and_fix() -> None:
    error = ModelError("bad parameter", fix="set model.params to numbers", field="model.params")
    located = locate(error, command="crossval")
    assert type(located) is ModelError and located.what == "bad parameter"
    assert str(located) == "--param: bad parameter. Fix: set --param to numbers."
    assert str(error).startswith("model.params: ")  # the original is left as it was
    run = locate(CatalogError("gone", fix="check it", field="sensors[0].catalog.url"))
    assert str(run) == "spec.sensors[0].catalog.url: gone. Fix: check it."
    plain = CatalogError("no field")
    assert locate(plain) is plain

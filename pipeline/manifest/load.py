"""Loading a manifest: YAML to RunManifest, relative paths resolved, locations checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from pipeline.errors import ManifestError
from pipeline.manifest.common import (
    _is_url,
)
from pipeline.manifest.estimator import check_estimator
from pipeline.manifest.explain import _explain
from pipeline.manifest.outputs import OutputsSpec
from pipeline.manifest.run import RunManifest


def load_manifest(path: str | Path) -> RunManifest:
    """Read, validate and normalize a manifest file; raise ManifestError naming every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"manifest file {str(path)!r} does not exist", fix="check the path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"manifest file {str(path)!r} cannot be read ({exc})",
            fix="check that it is a readable UTF-8 YAML file",
        ) from None
    return parse_manifest(text, base_dir=path.resolve().parent, source=str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last
    silently: a second ``outputs:`` block would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: YAML's own error follows
                continue
            if first is not None:
                raise _DuplicateKeyError(
                    key, first.start_mark.line + 1, key_node.start_mark.line + 1
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


class _DuplicateKeyError(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        self.key, self.first, self.second = key, first, second


def _check_characters(text: str, source: str) -> None:
    """A NUL (or another control character YAML refuses), with its line and column."""
    for index, char in enumerate(text):
        if char == "\x00" or (ord(char) < 32 and char not in "\t\n\r"):
            line = text.count("\n", 0, index) + 1
            column = index - (text.rfind("\n", 0, index) + 1) + 1
            raise ManifestError(
                f"{source} holds the control character {char!r} at line {line}, column "
                f"{column} (character {index + 1})",
                fix="remove it (a binary or corrupted file, or a copy-paste accident); a "
                "manifest is plain UTF-8 text",
            )


def parse_manifest(text: str, *, base_dir: Path, source: str = "<manifest>") -> RunManifest:
    _check_characters(text, source)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except _DuplicateKeyError as exc:
        raise ManifestError(
            f"{source}: key {exc.key!r} is given twice in one mapping, at lines {exc.first} and "
            f"{exc.second} (YAML would keep the second silently)",
            fix=f"keep one {exc.key!r} (merge the two blocks) and delete the other",
        ) from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ManifestError(
            f"{source} is not valid YAML{where}: {problem}",
            fix="correct the YAML syntax (indentation, colons, quotes) at that place",
        ) from None
    if not isinstance(data, dict):
        raise ManifestError(
            f"{source} must be a YAML mapping with apiVersion, kind, metadata and spec, "
            f"got {type(data).__name__}",
            fix="start from examples/slovenia/run.yaml",
        )
    try:
        manifest = RunManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_explain(exc, data, source)) from None
    check_estimator(manifest.spec.model)
    manifest = _resolve_paths(manifest, base_dir)
    _check_locations(manifest)
    return manifest


def with_store(manifest: RunManifest, store: str, *, base_dir: Path | None = None) -> RunManifest:
    """The manifest writing to ``store`` instead (a CLI override), checked like the manifest's."""
    try:
        outputs = OutputsSpec.model_validate({**manifest.spec.outputs.model_dump(), "store": store})
    except ValidationError as exc:
        raise ManifestError(
            _explain(exc, {}, "--store").replace("  - store:", "  - --store (spec.outputs.store):")
        ) from None
    outputs = outputs.model_copy(update={"store": _resolve(outputs.store, base_dir or Path.cwd())})
    changed = manifest.model_copy(
        update={"spec": manifest.spec.model_copy(update={"outputs": outputs})}
    )
    _check_locations(changed)
    return changed


def _resolve(value: str, base_dir: Path) -> str:
    """Normalize a location once: URLs as they are, local paths (and file:// URLs) absolute."""
    if value.startswith("file://"):
        value = value.removeprefix("file://")
    if _is_url(value):
        return value
    return str((base_dir / Path(value).expanduser()).resolve())


_USERINFO = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@")


def _inputs(manifest: RunManifest) -> list[tuple[str, str]]:
    """(field path, location) of every input the run reads."""
    spec = manifest.spec
    found = [(f"spec.sensors[{i}].catalog.url", s.catalog.url) for i, s in enumerate(spec.sensors)]
    found.append(("spec.reference.path", spec.reference.path))
    if spec.reference.regions is not None:
        found.append(("spec.reference.regions.path", spec.reference.regions.path))
    if spec.model.path:
        found.append(("spec.model.path", spec.model.path))
    for i, encoder in enumerate(spec.features.encoders):
        found.append((f"spec.features.encoders[{i}].weights", encoder.weights))
    return found


def _check_locations(manifest: RunManifest) -> None:
    """Checks that need resolved paths: no credentials in URLs, no input inside what the run
    writes (a rerun would overwrite it)."""
    from pipeline.run.layout import RunLayout

    outputs = manifest.spec.outputs
    for field, location in _inputs(manifest):
        if _USERINFO.match(location):
            raise ManifestError(
                f"{location.split('@', 1)[0].split('://')[0]}://...@ URL holds credentials",
                fix="remove them from the URL; give credentials through the environment (or "
                "headers_from_env / a Kubernetes secret), never in the manifest",
                field=field,
            )
    if _is_url(outputs.store):
        return
    store = Path(outputs.store)
    written = RunLayout(
        store, outputs.labels, outputs.confidence, outputs.report, outputs.values
    ).written()
    for field, location in _inputs(manifest):
        if _is_url(location):
            continue
        path = Path(location)
        for target in written:
            if path == target or target in path.parents:
                raise ManifestError(
                    f"input {location!r} lies inside {str(target)!r}, which the run writes "
                    f"(outputs.store {str(store)!r})",
                    fix="keep inputs outside what the run writes: move the file, or choose "
                    "another outputs.store",
                    field=field,
                )


def _resolve_paths(manifest: RunManifest, base_dir: Path) -> RunManifest:
    spec = manifest.spec
    sensors = [
        s.model_copy(
            update={
                "catalog": s.catalog.model_copy(update={"url": _resolve(s.catalog.url, base_dir)})
            }
        )
        for s in spec.sensors
    ]
    spec = spec.model_copy(
        update={
            "sensors": sensors,
            "reference": spec.reference.model_copy(
                update={
                    "path": _resolve(spec.reference.path, base_dir),
                    "regions": spec.reference.regions
                    and spec.reference.regions.model_copy(
                        update={"path": _resolve(spec.reference.regions.path, base_dir)}
                    ),
                }
            ),
            "model": spec.model.model_copy(update={"path": _resolve(spec.model.path, base_dir)})
            if spec.model.path
            else spec.model,
            "outputs": spec.outputs.model_copy(
                update={"store": _resolve(spec.outputs.store, base_dir)}
            ),
            "fusion": spec.fusion and spec.fusion.with_paths(lambda v: _resolve(v, base_dir)),
            "objects": spec.objects and spec.objects.with_paths(lambda v: _resolve(v, base_dir)),
            "features": spec.features.with_paths(lambda v: _resolve(v, base_dir)),
        }
    )
    return manifest.model_copy(update={"spec": spec})


# --- error messages ------------------------------------------------------------------------------

"""What a SitsRun must hold to work in a cluster, beyond the manifest's own rules.

``sitsflow validate`` accepts ``outputs.store: /data/out`` or ``reference.path: ref.gpkg``: on a
workstation they are files. In a cluster the driver and each worker see only the image (read-only)
and their own emptyDir, so such a run could only fail later, in a worker, after minutes. The
operator refuses it at once, naming the field, the value and the two ways out: a URL
(``s3://...``), or a claim in ``compute.kubernetes.volumes`` mounted where the path points.

Files shipped inside the image (the bundled demo under ``/opt/sitsflow``) are inputs the pods do
have; nothing can be written there (the root file system is read-only).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import ManifestError
from pipeline.manifest.fields import locate
from pipeline.run.dask_spec import Volume

#: Where the image keeps the files it ships (deploy/Dockerfile): readable by every pod.
IMAGE_DATA_DIR = PurePosixPath("/opt/sitsflow")

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def volumes_of(spec: Mapping[str, Any]) -> tuple[Volume, ...]:
    """The claims a (checked) spec declares under ``compute.kubernetes.volumes``."""
    section = (spec.get("compute") or {}).get("kubernetes") or {}
    return tuple(
        Volume(
            claim=v["claim"],
            mount_path=str(v["mount_path"]).rstrip("/") or "/",
            read_only=bool(v.get("read_only", False)),
        )
        for v in section.get("volumes") or []
    )


def _inputs(spec: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(domain key, location as written) of every file the run reads."""
    for i, sensor in enumerate(spec.get("sensors") or []):
        url = (sensor.get("catalog") or {}).get("url")
        if url:
            yield f"sensors[{i}].catalog.url", str(url)
    reference = spec.get("reference") or {}
    if reference.get("path"):
        yield "reference.path", str(reference["path"])
    regions = reference.get("regions") or {}
    if regions.get("path"):
        yield "reference.regions.path", str(regions["path"])
    model = spec.get("model") or {}
    if model.get("path"):
        yield "model.path", str(model["path"])


def _local(location: str) -> str | None:
    """The path a location names on the pod's file system, or None for a remote URL."""
    if location.startswith("file://"):
        return location.removeprefix("file://")
    return None if _URL.match(location) else location


def _under(path: PurePosixPath, root: PurePosixPath) -> bool:
    return path == root or root in path.parents


def _volume_for(path: PurePosixPath, volumes: Sequence[Volume]) -> Volume | None:
    for volume in volumes:
        if _under(path, PurePosixPath(volume.mount_path)):
            return volume
    return None


def _declare(path: PurePosixPath, *, writable: bool) -> str:
    mode = "" if writable else ", read_only: true"
    mount = PurePosixPath(*path.parts[:2]) if len(path.parts) > 1 else PurePosixPath("/data")
    return (
        "or mount a PersistentVolumeClaim that holds it: spec.compute.kubernetes.volumes: "
        f"[{{claim: <pvc name>, mount_path: {mount}{mode}}}] (with compute.cluster: kubernetes "
        "and compute.kubernetes.image: the chart's image)"
    )


def cluster_problems(spec: Mapping[str, Any]) -> list[ManifestError]:
    """Every local location of ``spec`` (the SitsRun's spec as applied) that its pods would not
    have, as errors with the field, the value and the fix (empty: the run can work)."""
    volumes = volumes_of(spec)
    problems: list[ManifestError] = []
    store = str((spec.get("outputs") or {}).get("store") or "")
    located = [("outputs.store", store, True), *((k, v, False) for k, v in _inputs(spec))]
    for key, location, writes in located:
        local = _local(location)
        if local is None:
            continue
        if not local.startswith("/"):
            problems.append(
                ManifestError(
                    f"{location!r} is a relative path, but a SitsRun has no folder it could be "
                    "relative to",
                    fix="use a URL (s3://bucket/..., https://...) or an absolute path inside a "
                    "declared volume (compute.kubernetes.volumes)",
                    field=key,
                )
            )
            continue
        path = PurePosixPath(local)
        volume = _volume_for(path, volumes)
        if volume is not None:
            if writes and volume.read_only:
                problems.append(
                    ManifestError(
                        f"{location!r} lies on volume {volume.claim!r}, mounted read-only at "
                        f"{volume.mount_path}, but the run writes its store there",
                        fix="set read_only: false on that volume, or write to s3://bucket/...",
                        field=key,
                    )
                )
            continue
        if not writes and _under(path, IMAGE_DATA_DIR):
            continue  # shipped inside the image (the bundled demo)
        what = "the run's store" if writes else "an input"
        declare = _declare(path, writable=writes)
        problems.append(
            ManifestError(
                f"{location!r} is a local path ({what}) that no volume provides: the driver and "
                "the workers each see only the image and an empty scratch folder",
                fix=f"use an object-store URL (e.g. s3://bucket/...), {declare}",
                field=key,
            )
        )
    return problems


def admission_message(spec: Mapping[str, Any]) -> str | None:
    """One message for every problem (manifest paths, e.g. spec.outputs.store), or None."""
    problems = cluster_problems(spec)
    if not problems:
        return None
    return "\n".join(str(locate(p)) for p in problems)


def check_files(paths: Sequence[str]) -> list[str]:
    """The operator's admission, offline, on SitsRun files: the manifest rules (without reading
    any input: the files a run reads are in its image, its volumes or its bucket, not here) and
    the cluster rules above. One message per file refused."""
    import yaml

    from pipeline.manifest import parse_manifest

    refused = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        try:
            parse_manifest(text, base_dir=Path("/"), source=path)
        except ManifestError as exc:
            refused.append(str(locate(exc)))
            continue
        spec = (yaml.safe_load(text) or {}).get("spec") or {}
        problems = admission_message(spec)
        if problems:
            refused.append(f"{path} cannot run in the cluster:\n{problems}")
    return refused


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.k8s.admission RUN.yaml...``: 1 when the operator would refuse one."""
    import sys

    paths = list(sys.argv[1:] if argv is None else argv)
    refused = check_files(paths)
    for message in refused:
        print(message, file=sys.stderr)
    if not refused:
        print(f"{len(paths)} SitsRun file(s) pass the operator's admission", file=sys.stderr)
    return 1 if refused else 0


if __name__ == "__main__":
    raise SystemExit(main())

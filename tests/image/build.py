"""The image build of a test session, started as soon as the tests are collected.

Building the image is mostly file copying (buildah's vfs driver) and unpacking wheels, so it runs
in the background while the rest of the suite runs, and `tests/image` waits for it. The build is
offline (`deploy/image.sh build`): the Debian base and the dependencies' wheelhouse come from
`deploy/image.sh prepare`, which `scripts/bootstrap.sh --dev` (`make test`) runs once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TAG = "localhost/sitsflow:test"
BASE_TAG = "localhost/sitsflow-base:bookworm-python3"
ENV = {"STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
BUILD_TIMEOUT_S = 1800
LOG = REPO / "build" / "image-test-build.log"
STATS = REPO / "build" / "image-test-stats.json"


@dataclass
class Build:
    process: subprocess.Popen[bytes] | None
    why_not: str = ""
    """Why no build was started (a missing tool, no root, no prepared base)."""


BUILD_KEY = pytest.StashKey[Build]()


def why_it_cannot_build() -> str:
    """Empty when this machine can build the image offline, else the reason and the fix."""
    if shutil.which("buildah") is None:
        return "buildah is absent: the image cannot be built (apt-get install buildah debootstrap)"
    if os.geteuid() != 0:
        return "buildah with vfs needs root here"
    base = subprocess.run(
        ["buildah", "inspect", "--type", "image", BASE_TAG],
        capture_output=True,
        env={**os.environ, **ENV},
        timeout=120,
    )
    if base.returncode != 0:
        return (
            f"no base image {BASE_TAG}: run `deploy/image.sh prepare` once "
            "(scripts/bootstrap.sh --dev does, as root)"
        )
    return ""


def start(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the build when an image test is selected and no image was given."""
    wanted = any(Path(str(item.path)).is_relative_to(REPO / "tests" / "image") for item in items)
    if not wanted or os.environ.get("SITSFLOW_IMAGE") or config.option.collectonly:
        return
    why = why_it_cannot_build()
    if why:
        config.stash[BUILD_KEY] = Build(None, why)
        return
    LOG.parent.mkdir(exist_ok=True)
    with LOG.open("wb") as log:
        process = subprocess.Popen(
            [str(REPO / "deploy" / "image.sh"), "build"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **ENV, "TAG": TAG, "STATS": str(STATS)},
            start_new_session=True,
        )
    config.stash[BUILD_KEY] = Build(process)


def wait(config: pytest.Config) -> Build | None:
    """The session's build once finished (None: none was started for this session)."""
    build = config.stash.get(BUILD_KEY, None)
    if build is None or build.process is None:
        return build
    try:
        build.process.wait(timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(config)
        raise AssertionError(f"the image build took over {BUILD_TIMEOUT_S} s; log: {LOG}") from None
    return build


def stop(config: pytest.Config) -> None:
    """Stop a build still running (the session ended or timed out), by its process group."""
    build = config.stash.get(BUILD_KEY, None)
    if build is None or build.process is None or build.process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(build.process.pid, signal.SIGTERM)
    try:
        build.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(build.process.pid, signal.SIGKILL)
        build.process.wait(timeout=60)

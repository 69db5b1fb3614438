"""Shared fixtures. Tests reach no network: every server a test needs is started on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Timing deadlines make property tests flaky on loaded 2-core CI machines; speed is measured in
# bench/, not asserted here.
settings.register_profile("sitsflow", deadline=None, print_blob=True)
settings.load_profile("sitsflow")

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "examples" / "slovenia"
DEMO_MANIFEST = DEMO_DIR / "run.yaml"


def demo_in(store: Path) -> Any:
    """The demo manifest writing into ``store``: its own store (runs/slovenia-demo) may hold a
    `make demo`, which planning without --resume refuses."""
    from pipeline.manifest import load_manifest

    manifest = load_manifest(DEMO_MANIFEST)
    outputs = manifest.spec.outputs.model_copy(update={"store": str(store)})
    return manifest.model_copy(
        update={"spec": manifest.spec.model_copy(update={"outputs": outputs})}
    )


@pytest.fixture(autouse=True)
def _no_outside_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse connections to anything but the loopback interface."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if (
            isinstance(host, str)
            and host not in ("127.0.0.1", "localhost", "::1")
            and not (host.startswith("127.") or host.startswith("/"))
        ):
            raise RuntimeError(f"test tried to reach {address!r}: tests must stay on 127.0.0.1")
        return real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The image tests run last, so that the image builds in the background meanwhile."""
    image_dir = REPO / "tests" / "image"
    items.sort(key=lambda item: Path(str(item.path)).is_relative_to(image_dir))


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests.image.build import start

    start(session.config, session.items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.image.build import stop

    stop(session.config)

"""Bad input through the real CLI: a one-paragraph error, exit code 2, and nothing written."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import DEMO_DIR, DEMO_MANIFEST


def write_manifest(folder: Path, change: Any) -> Path:
    """A copy of the demo manifest with absolute input paths, edited by ``change``."""
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    data["spec"]["sensors"][0]["catalog"]["url"] = str(DEMO_DIR / "catalog" / "catalog.json")
    data["spec"]["reference"]["path"] = str(DEMO_DIR / "reference" / "lulc.gpkg")
    data["spec"]["outputs"]["store"] = str(folder / "store")
    data = copy.deepcopy(data)
    change(data["spec"])
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name != "run.yaml")


def _missing_catalog(spec: dict[str, Any]) -> None:
    spec["sensors"][0]["catalog"]["url"] = "/nonexistent/catalog.json"


def _unknown_band(spec: dict[str, Any]) -> None:
    spec["sensors"][0]["bands"] = {"red": {"asset": "B04"}}


def _period_without_data(spec: dict[str, Any]) -> None:
    spec["period"] = {"start": "2019-01-01", "end": "2019-12-31"}


def _empty_period(spec: dict[str, Any]) -> None:
    spec["period"] = {"start": "2017-06-01", "end": "2017-06-01"}


def _missing_reference(spec: dict[str, Any]) -> None:
    spec["reference"]["path"] = "/nonexistent/lulc.gpkg"


def _unknown_label_field(spec: dict[str, Any]) -> None:
    spec["reference"]["label_field"] = "CLASS"


def _unknown_mask_asset(spec: dict[str, Any]) -> None:
    spec["sensors"][0]["masks"][0]["asset"] = "SCL"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_missing_catalog, ["spec.sensors[0].catalog.url", "/nonexistent/catalog.json", "Fix:"]),
        (_unknown_band, ["has no asset 'B04'", "its assets: cloud, ndvi", "Fix:"]),
        (_unknown_mask_asset, ["has no asset 'SCL'", "Fix:"]),
        (_period_without_data, ["spec.period", "2019-01-01 .. 2019-12-31", "2015-07-11", "Fix:"]),
        (_empty_period, ["spec.period", "the period is empty", "Fix:"]),
        (_missing_reference, ["spec.reference.path", "does not exist", "Fix:"]),
        (_unknown_label_field, ["spec.reference.label_field", "no field 'CLASS'", "LULC_ID"]),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, change: Any, words: list[str]
) -> None:
    manifest = write_manifest(tmp_path, change)
    code, output = run_cli("run", str(manifest))
    assert code == 2, output
    error = output[output.index("error:") :]
    assert "\n\n" not in error.strip()  # one paragraph
    flat = " ".join(error.split())
    for word in words:
        assert word in flat, (word, output)
    assert "Traceback" not in output
    assert files_under(tmp_path) == []


def test_output_below_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    manifest = write_manifest(tmp_path, lambda spec: None)
    code, output = run_cli("run", str(manifest), "--store", str(blocker / "store"))
    assert code == 2
    assert "spec.outputs.store" in output and "is a file" in " ".join(output.split())
    assert files_under(tmp_path) == [blocker]


def test_unwritable_output_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes through permissions; /proc refuses new files to everyone.
        target = Path("/proc/sitsflow-test-store")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "store"
    manifest = write_manifest(tmp_path, lambda spec: None)
    code, output = run_cli("run", str(manifest), "--store", str(target))
    assert code == 2, output
    assert "spec.outputs.store" in output
    assert "Fix:" in output
    assert not target.exists()


def test_existing_outputs_survive_a_failed_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "maps").mkdir(parents=True)
    (store / "maps" / "labels.tif").write_bytes(b"previous map")
    manifest = write_manifest(tmp_path, _unknown_band)
    code, _ = run_cli("run", str(manifest))
    assert code == 2
    assert (store / "maps" / "labels.tif").read_bytes() == b"previous map"


def test_validate_command(tmp_path: Path) -> None:
    code, output = run_cli("validate", str(DEMO_MANIFEST))
    assert code == 0
    assert "valid SitsRun 'slovenia-demo'" in output
    bad = tmp_path / "bad.yaml"
    shutil.copy(DEMO_MANIFEST, bad)
    bad.write_text(bad.read_text().replace("validation_fraction: 0.3", "validation_fraction: 3"))
    code, output = run_cli("validate", str(bad))
    assert code == 2
    assert "spec.sampling.validation_fraction" in output

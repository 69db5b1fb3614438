"""Text class labels: accepted by the run (codes 1..K in sorted name order, names kept), and what
the run would refuse in the reference is refused by ``sitsflow validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest

from pipeline.errors import InputDataError
from pipeline.model import GridSpec
from pipeline.samples.config import ReferenceConfig
from pipeline.samples.reference import check_reference, load_reference
from tests.newuser.fixtures import text_reference
from tests.run.helpers import cli, demo_manifest

DEMO_GRID = GridSpec(
    "EPSG:32633",
    (9.99479222007154, 0.0, 465181.0522318204, 0.0, -9.997448467363668, 5080254.63349641),
    100,
    101,
)


@pytest.fixture(scope="module")
def names_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return text_reference(tmp_path_factory.mktemp("text"))


def test_text_labels_get_sorted_codes_and_keep_their_names(names_file: Path) -> None:
    reference = load_reference(ReferenceConfig(str(names_file), label_field="LULC_NAME"), DEMO_GRID)
    names = sorted(set(gpd.read_file(names_file)["LULC_NAME"]))
    assert [(c.code, c.name) for c in reference.legend] == [
        (code, name) for code, name in enumerate(names, start=1)
        if code in set(reference.table["label"])
    ]  # fmt: skip
    row = reference.table.iloc[0]
    assert names[int(row["label"]) - 1] == row["name"]
    assert check_reference(ReferenceConfig(str(names_file), label_field="LULC_NAME")) > 10


def _broken(folder: Path, change: Any) -> Path:
    frame = gpd.read_file(text_reference(folder))
    change(frame)
    path = folder / "broken.gpkg"
    frame.to_file(path)
    return path


@pytest.mark.parametrize(
    ("change", "config", "message"),
    [
        (lambda f: f.__setitem__("LULC_NAME", 1.5), {}, r"non-integer numbers \(e\.g\. 1\.5\)"),
        (lambda f: f.__setitem__("LULC_NAME", f["LULC_NAME"].where(f.index > 2)), {}, "3 ref"),
        (lambda f: None, {"name_field": "NAME"}, "no field 'NAME'"),
        (lambda f: None, {"ignore_labels": (0,)}, "text labels .* ignore_labels lists codes"),
    ],
    ids=["float", "missing", "no-field", "ignore-codes"],
)
def test_check_reference_refuses_what_the_run_refuses(
    tmp_path: Path, change: Any, config: dict[str, Any], message: str
) -> None:
    spec = ReferenceConfig(str(_broken(tmp_path, change)), label_field="LULC_NAME", **config)
    with pytest.raises(InputDataError, match=message):
        check_reference(spec)
    with pytest.raises(InputDataError, match=message):
        load_reference(spec, DEMO_GRID)


def test_validate_reads_the_reference(tmp_path: Path, names_file: Path) -> None:
    def text(spec: dict[str, Any]) -> None:
        spec["reference"] = {"path": str(names_file), "label_field": "LULC_NAME"}

    done = cli("validate", str(demo_manifest(tmp_path / "ok", text)), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    def typo(spec: dict[str, Any]) -> None:
        spec["reference"] = {"path": str(names_file), "label_field": "LULC_NAM"}

    done = cli("validate", str(demo_manifest(tmp_path / "typo", typo)), timeout=120)
    assert done.returncode == 2
    output = " ".join((done.stdout + done.stderr).split())
    assert "spec.reference.label_field" in output and "no field 'LULC_NAM'" in output

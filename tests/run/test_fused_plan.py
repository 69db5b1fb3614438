"""Planning a run that keeps no cube (``outputs.keep_cube: false``): the cube stage plans no
unit and says why, every other unit keeps the digest it has with the cube (the values are the
same, so a store resumes across the switch), and what reads a cube is refused before anything
is read. The runs themselves: tests/run/test_reliability.py (a fused run killed and resumed,
its maps and samples against a run with the cube)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ManifestError
from pipeline.manifest import load_manifest, resolve
from pipeline.run.runner import plan_run
from pipeline.run.units import canonical
from pipeline.stages.cube import NOT_KEPT
from tests.run.helpers import demo_manifest


def _no_cube(spec: dict[str, Any]) -> None:
    spec["outputs"]["keep_cube"] = False


def test_no_cube_plans_no_cube_unit_and_the_same_digests_elsewhere(tmp_path: Path) -> None:
    kept = plan_run(resolve(load_manifest(demo_manifest(tmp_path / "kept"))))
    fused = plan_run(resolve(load_manifest(demo_manifest(tmp_path / "fused", _no_cube))))
    assert kept.units["cube"] and not fused.units["cube"]
    assert "cube" in kept.stages["cube"].files and "cube" not in fused.stages["cube"].files
    assert fused.estimate["cube"] == NOT_KEPT and "cube" not in kept.estimate
    assert fused.outputs("cube").cube_digests == kept.outputs("cube").cube_digests
    for stage, units in kept.units.items():
        if stage != "cube":
            assert [(u.key, u.digest) for u in fused.units[stage]] == [
                (u.key, u.digest) for u in units
            ], stage
    assert fused.digests == kept.digests
    # A fused predict unit builds its chunk's features before predicting them.
    assert fused.work.predict_bytes == kept.work.predict_bytes + kept.work.chunk_bytes
    # The option enters the outputs' digest form only when set.
    assert "keep_cube" not in canonical(kept.config.outputs)
    assert canonical(fused.config.outputs)["keep_cube"] is False


@pytest.mark.parametrize(
    ("section", "value", "named"),
    [
        ("objects", {"segmentation": {"method": "slic", "size": 40}}, "objects segments the cube"),
        (
            "model",
            {"kind": "torch_patch", "architecture": "utae", "patch": {"size": 16, "stride": 8}},
            "torch_patch cuts its training patches from the cube",
        ),
    ],
)
def test_what_reads_the_cube_is_refused_at_planning(
    tmp_path: Path, section: str, value: dict[str, Any], named: str
) -> None:
    def change(spec: dict[str, Any]) -> None:
        _no_cube(spec)
        spec[section] = value

    config = resolve(load_manifest(demo_manifest(tmp_path, change)))
    with pytest.raises(ManifestError, match=named) as err:
        plan_run(config)
    assert err.value.field == "outputs.keep_cube"
    assert err.value.fix is not None and "keep_cube" in err.value.fix
    assert not (tmp_path / "store" / "state").exists()  # nothing written

"""Planning object mode with percentiles: the zonal units keep their pixels' values then (a new
digest), and without percentiles every unit has the digest it had before percentiles existed,
so existing stores resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.manifest import load_manifest, resolve
from pipeline.run.runner import plan_run
from pipeline.stages.objects import digest
from tests.run.helpers import demo_manifest


def _plan(folder: Path, statistics: list[str] | None) -> Any:
    def change(spec: dict[str, Any]) -> None:
        spec["objects"] = {"segmentation": {"method": "slic", "size": 40, "halo": 12}}
        if statistics is not None:
            spec["objects"]["statistics"] = statistics

    return plan_run(resolve(load_manifest(demo_manifest(folder, change))))


def _digests(plan: Any, prefix: str) -> list[str]:
    return [u.digest for u in plan.units["objects"] if u.key.startswith(prefix)]


def test_percentiles_change_the_zonal_digests_only_when_asked(tmp_path: Path) -> None:
    default = _plan(tmp_path / "default", None)
    same = _plan(tmp_path / "same", ["mean"])
    with_std = _plan(tmp_path / "std", ["mean", "std"])
    with_p = _plan(tmp_path / "p", ["mean", "std", "p10", "p50", "p90"])
    assert [(u.key, u.digest) for u in default.units["objects"]] == [
        (u.key, u.digest) for u in same.units["objects"]
    ]
    # The zonal digest of a run without percentiles is the one before they existed: the
    # segmentation's, the cube chunk's and the window's.
    objects = default.outputs("objects")
    cube = default.outputs("cube")
    stitch = objects.stitch.digest
    before = [digest(stitch, cube.cube_digests[(None, w)], w) for w in objects.windows]
    assert _digests(default, "zonal-") == before == _digests(with_std, "zonal-")
    assert _digests(with_p, "segment-") == _digests(default, "segment-")
    assert _digests(with_p, "stitch") == _digests(default, "stitch")
    assert set(_digests(with_p, "zonal-")).isdisjoint(before)
    assert _digests(with_p, "model") != _digests(with_std, "model") != _digests(default, "model")

"""``python -m bench.chain --quick``'s sitsflow part runs and its figures hold together, so that
the whole-chain entry of the benchmark suite cannot rot; and the national sizing's arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import chain


@pytest.mark.slow
def test_quick_sitsflow_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures_file = tmp_path / "figures.json"
    code = chain.main(
        ["--quick", "--only", "sitsflow", "--work", str(tmp_path), "--json", str(figures_file)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    figures = json.loads(figures_file.read_text())["chain"]
    runs = {k: v for k, v in figures["paths"].items() if k.startswith("sitsflow ")}
    # The cube-kept run exists in every build; a variant is run or said to be unavailable.
    assert "sitsflow cube, scikit-learn" in runs
    for name, _, _ in chain.VARIANTS:
        key = f"sitsflow {name}"
        assert (key in runs) != (key in figures["skipped"]), key
        if key in figures["skipped"]:
            assert figures["skipped"][key].startswith("not available in this build")
            assert f"{name}: not available in this build" in printed
    for run in runs.values():
        assert run["seconds"] > 0 and run["cpu_seconds"] > 0 and run["peak_mib"] > 0
        assert run["estimate"]["pixels"] == 256 * 256
        assert run["accuracy"] is not None and run["accuracy"] > 0.5  # the points are learnable
        assert set(run["phases"]) == {"start", "plan", "first_unit", "units", "end"}
    # Every pair of variants that ran gives the same map (fused == cube to the bit).
    assert figures["maps"] and all(figures["maps"].values()), figures["maps"]
    assert figures["headline"] in runs
    assert "| path | wall s | CPU s | peak MiB/worker |" in printed


def test_national_sizing_formula() -> None:
    measured = chain.Config("m", acquisitions=10, bands_10m=4, bands_20m=0, masks_20m=1,
                            variables=5, dates=10, trees=50)  # fmt: skip
    target = chain.Config("n", acquisitions=20, bands_10m=4, bands_20m=6, masks_20m=1,
                          variables=10, dates=10, trees=100)  # fmt: skip
    assert measured.decodes == 10 * 4.25 and target.decodes == 20 * 5.75
    s = chain.national_sizing(measured, 10e-6, 2e-6, 3e-6, target, km2=1000)
    # read 2 x 115/42.5, predict 3 x 2, rest (10 - 2 - 3) x 100/50
    expected = 2e-6 * 115 / 42.5 + 3e-6 * 2 + 5e-6 * 2
    assert s["cpu_s_per_px"] == pytest.approx(expected)
    assert s["pixels"] == 1000 * 10_000
    assert s["cpu_hours"] == pytest.approx(1e7 * expected / 3600)
    # Metropolitan France at 10 m: about 5.5 billion pixels, not 15.
    france = chain.national_sizing(measured, 10e-6, 2e-6, 3e-6, target)
    assert 5.5e9 <= france["pixels"] < 5.53e9
    assert "5.52 billion pixels" in chain.sizing_text(france)


def test_sizing_from_measured_figures() -> None:
    """``sizing`` takes the chain from the headline run (or the scale runs' margin) and the
    trees' share from the cube-kept run's predict stage."""
    paths = {
        "read floor": {"cpu_seconds": 4.0},
        "predict floor": {"cpu_seconds": 50.0},
        "sitsflow fused, compiled": {"cpu_seconds": 80.0},
        "sitsflow cube, compiled": {
            "cpu_seconds": 90.0,
            "stage_seconds": {"cube": 15, "predict": 5},
        },
    }
    figures = {"paths": paths, "headline": "sitsflow fused, compiled", "size": 100, "dates": 10,
               "output_dates": 37, "trees": 100}  # fmt: skip
    s = chain.sizing(figures)
    assert s is not None
    assert s["inputs"]["chain_cpu_s_per_px"] == pytest.approx(80 / 1e4)
    assert s["inputs"]["read_cpu_s_per_px"] == pytest.approx(4 / 1e4)
    assert s["inputs"]["predict_cpu_s_per_px"] == pytest.approx(80 / 1e4 * 5 / 20)
    runs = [
        {"cpu_s": 20.0, "pixels": 100},
        {"cpu_s": 35.0, "pixels": 400},
        {"cpu_s": 80.0, "pixels": 1600},
    ]
    margin = chain.sizing(figures, {"tiles": {"variant": "fused, compiled", "runs": runs}})
    assert margin is not None
    assert margin["inputs"]["chain_cpu_s_per_px"] == pytest.approx(60 / 1500)
    assert chain.sizing({**figures, "headline": None}) is None

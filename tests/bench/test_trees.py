"""``python -m bench.trees --quick`` runs, its two forests are the sizes it says, and the kernel's
probabilities equal scikit-learn's to the bit, so that the trees' entry of the suite cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import trees


def test_quick_trees_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures_file = tmp_path / "trees.json"
    assert trees.main(["--quick", "--json", str(figures_file)]) == 0
    printed = capsys.readouterr().out
    small, large = json.loads(figures_file.read_text())
    assert small["pixels"] == large["pixels"] == 50_000
    assert small["nodes"] < large["nodes"]  # 700 labelled pixels against all of them
    for forest in (small, large):
        assert forest["kernel_bit_equal"] is True
        assert forest["sklearn_cpu_s"] > 0 and forest["kernel_cpu_s"] > 0
    assert "| forest | nodes | pixels | scikit-learn CPU s |" in printed

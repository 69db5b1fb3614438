"""The (time, channel) layout is parsed from feature names, whatever their order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ModelError
from pipeline.learn.torch.estimator import SitsNetwork
from pipeline.learn.torch.layout import TemporalLayout, from_feature_names


def cube_names(variables: list[str], dates: list[str]) -> list[str]:
    return [f"{v}_{d}" for v in variables for d in dates]


def test_cube_feature_names() -> None:
    names = cube_names(["s2_red", "s2_nir", "s2_ndvi"], ["20170101", "20170111", "20170121"])
    layout = from_feature_names(names)
    assert layout.channels == ("s2_red", "s2_nir", "s2_ndvi")
    assert layout.times == ("20170101", "20170111", "20170121")
    assert layout.positions == (0.0, 10.0, 20.0)
    # index[t][c]: s2_nir on the third date is feature 1 * 3 + 2.
    assert layout.index[2][1] == 5


def test_positions_count_days_across_years() -> None:
    layout = from_feature_names(["ndvi_20161225", "ndvi_20170104"])
    assert layout.positions == (0.0, 10.0)


def test_date_index_names() -> None:
    layout = from_feature_names([f"ndvi_t{i:02d}" for i in range(12)])
    assert layout.n_times == 12 and layout.positions[3] == 3.0
    with pytest.raises(ModelError, match=r"mix dates \(_YYYYMMDD\) and date indices"):
        from_feature_names(["ndvi_t00", "ndvi_20170101"])


@given(
    n_channels=st.integers(1, 4),
    n_times=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_column_order_reshapes_to_the_same_series(
    n_channels: int, n_times: int, seed: int
) -> None:
    dates = [f"2017{m:02d}01" for m in range(1, n_times + 1)]
    channels = [f"s2_b{c}" for c in range(n_channels)]
    names = cube_names(channels, dates)
    # value = 10 * time + channel, so the (time, channel) grid is known in advance
    values = np.array(
        [
            10 * dates.index(n.rsplit("_", 1)[1]) + channels.index(n.rsplit("_", 1)[0])
            for n in names
        ],
        dtype=np.float32,
    )
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    layout = from_feature_names(shuffled)
    # channels keep the order they first appear in; times are sorted
    network = SitsNetwork(torch.nn.Identity(), layout, len(names))
    arranged = network.arrange(torch.from_numpy(values[order][None, :]))[0].numpy()
    expected_channels = [channels.index(c) for c in layout.channels]
    expected = 10 * np.arange(n_times)[:, None] + np.array(expected_channels)[None, :]
    np.testing.assert_array_equal(arranged, expected)


def test_sensors_on_different_date_grids_are_refused_with_a_fix() -> None:
    names = cube_names(["s2_ndvi"], ["20170101", "20170111", "20170121"]) + cube_names(
        ["l8_ndvi"], ["20170101", "20170117"]
    )
    with pytest.raises(ModelError) as err:
        from_feature_names(names)
    message = str(err.value)
    assert "'s2_ndvi' has 3 date(s)" in message and "'l8_ndvi' has 2" in message
    assert "date_step_days" in message and "architecture mlp" in message


@pytest.mark.parametrize(
    ("names", "words"),
    [
        (["dem"], "does not end with a date"),
        (["ndvi_20171301"], "not a valid date"),
        (["ndvi_20170101", "ndvi_20170101"], "appears twice"),
        ([], "no features"),
    ],
)
def test_names_that_cannot_be_laid_out(names: list[str], words: str) -> None:
    with pytest.raises(ModelError, match=words):
        from_feature_names(names)


def test_saved_layout_must_match_the_names() -> None:
    names = cube_names(["ndvi"], ["20170101", "20170111"])
    saved = from_feature_names(names).to_dict()
    assert TemporalLayout.from_dict(saved, names) == from_feature_names(names)
    saved["positions"] = [0.0, 5.0]
    with pytest.raises(ModelError, match="does not match its feature names"):
        TemporalLayout.from_dict(saved, names)


def test_encoder_features_are_static_channels_on_every_date() -> None:
    """features.encoders' outputs (<encoder>_eNN, no date) repeat on every date of the series."""
    names = [*cube_names(["s2_red", "s2_nir"], ["20170101", "20170111"]), "tiny_e00", "tiny_e01"]
    layout = from_feature_names(names)
    assert layout.channels == ("s2_red", "s2_nir", "tiny_e00", "tiny_e01")
    assert layout.times == ("20170101", "20170111")
    table = np.arange(len(names), dtype=np.float32)[None, :]
    series = table[:, layout.gather_index()].reshape(1, layout.n_times, layout.n_channels)
    assert series[0, :, 2].tolist() == [4.0, 4.0] and series[0, :, 3].tolist() == [5.0, 5.0]
    assert series[0, 1, :2].tolist() == [1.0, 3.0]  # the bands keep their own dates
    with pytest.raises(ModelError, match="all encoder outputs"):
        from_feature_names(["tiny_e00", "tiny_e01"])

"""A published annual embedding product read as a sensor: the ``embeddings-annual`` profile
finds each channel in the generator's multi-band int8 COGs and decodes it to -1..1, no data as a
gap, one acquisition per year."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.catalog.profiles import EMBEDDING_CHANNELS, EMBEDDING_SCALE, profile_by_name
from pipeline.cube.read import RasterioReader
from pipeline.testing.embeddings import COLLECTION, EMBEDDING_NODATA, annual_embeddings
from pipeline.testing.generators import overlapping_tiles, write_catalog


def test_the_profile_reads_every_channel_of_the_product(tmp_path: Path) -> None:
    tile = overlapping_tiles(size=16)[0]
    scenes = annual_embeddings(tmp_path, years=(2021, 2022), tiles=[tile])
    assert (write_catalog(scenes, tmp_path / "catalog")).exists()
    profile = profile_by_name("embeddings-annual")
    assert profile.collections == (COLLECTION,) and profile.date_step_days == 365
    assert len(profile.bands) == EMBEDDING_CHANNELS
    assert [s.datetime.year for s in scenes] == [2021, 2022]
    reader = RasterioReader()
    for scene in scenes:
        raw = scene.raw["embedding"]
        for band in (profile.bands[0], profile.bands[37], profile.bands[-1]):
            key = next(k for k in band.keys if k in scene.item.assets)
            read = reader.read(scene.item.assets[key].href, band.band_index, tile.grid())
            value = band.decode(read)
            expected = raw[band.band_index - 1].astype(np.float32) * np.float32(EMBEDDING_SCALE)
            missing = raw[band.band_index - 1] == EMBEDDING_NODATA
            np.testing.assert_allclose(value[~missing], expected[~missing], rtol=1e-6)
            assert np.isnan(value[missing]).all()
            assert np.nanmax(np.abs(value)) <= 1.0
        assert (raw == EMBEDDING_NODATA).any() == (scene.datetime.year == 2022)
    for run_profile in profile.configure("emb"):
        assert run_profile.band_names == profile.band_names

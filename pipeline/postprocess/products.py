"""Map products as files: COGs that carry their legend, and GDAL sidecars for maps already
written.

GDAL keeps a GeoTIFF's colour table, band description and unit inside the file (the COG driver
copies them from the GeoTIFF it converts), but its category names only in the PAM sidecar
``<file>.aux.xml`` (checked with GDAL 3.10: the COG copy writes them there itself, and
``gdalinfo`` lists them from there). ``sidecar_xml`` writes that sidecar whole: description,
unit, category names and, for a map written before (the raw label COG, whose bytes stay as
they are), its colour table too; every GDAL reader (QGIS, gdalinfo) reads it beside the file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window as RioWindow

from pipeline.model import GridSpec, Window
from pipeline.postprocess.legend import BandInfo, apply_band_info, category_names, colormap
from pipeline.storage import atomic_path

Filler = Callable[[Window], np.ndarray]


def sidecar_xml(info: BandInfo, *, color_table: bool) -> str:
    """The text of a PAM sidecar (``.aux.xml``) for band 1 saying ``info``; with
    ``color_table``, the legend's colours too (256 entries, unused ones transparent)."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    ET.SubElement(band, "Description").text = info.description
    if info.units:
        ET.SubElement(band, "UnitType").text = info.units
    if info.classes:
        if color_table:
            ET.SubElement(band, "ColorInterp").text = "Palette"
        names = ET.SubElement(band, "CategoryNames")
        for name in category_names(info.classes):
            ET.SubElement(names, "Category").text = name
        if color_table:
            table = ET.SubElement(band, "ColorTable")
            colors = colormap(info.classes)
            size = max(256, max(colors) + 1)
            for value in range(size):
                r, g, b, a = colors.get(value, (0, 0, 0, 0))
                ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_cog(
    destination: Path,
    grid: GridSpec,
    dtype: str,
    fill: Filler,
    windows: Sequence[Window],
    *,
    nodata: float,
    overview_resampling: str,
    info: BandInfo,
) -> Path:
    """A COG of ``grid`` from ``fill(window)`` for each of ``windows`` (they cover the grid),
    with ``info`` (description, unit, colour table) inside. Category names go to the sidecar
    (``sidecar_xml``): the caller writes it next to the published file."""
    with atomic_path(destination) as tmp:
        staging = tmp.with_name(tmp.name + ".gtiff")
        profile = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": 1,
            "dtype": dtype,
            "crs": grid.crs,
            "transform": grid.affine,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
        }
        try:
            with rasterio.open(staging, "w", **profile) as dst:
                for window in windows:
                    where = RioWindow(window.col_off, window.row_off, window.width, window.height)
                    dst.write(fill(window), 1, window=where)
                apply_band_info(dst, BandInfo(info.description, info.units, info.classes))
            rasterio.shutil.copy(
                staging,
                tmp,
                driver="COG",
                compress="DEFLATE",
                predictor="2",
                blocksize=256,
                overview_resampling=overview_resampling,
                overviews="AUTO",
                sparse_ok=False,
            )
        finally:
            staging.unlink(missing_ok=True)
            # GDAL's own sidecars of the staging and copied files: the caller writes the real one
            Path(f"{staging}.aux.xml").unlink(missing_ok=True)
            Path(f"{tmp}.aux.xml").unlink(missing_ok=True)
    return destination

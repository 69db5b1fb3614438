"""Map products as files: GDAL sidecars that carry the legend GDAL keeps outside a GeoTIFF.
The COGs themselves are written by the maps' one COG writer
(``pipeline.predict.outputs.write_cog``, given ``legend.apply_band_info``).

GDAL keeps a GeoTIFF's colour table, band description and unit inside the file (the COG driver
copies them from the GeoTIFF it converts), but its category names only in the PAM sidecar
``<file>.aux.xml`` (checked with GDAL 3.10: the COG copy writes them there itself, and
``gdalinfo`` lists them from there). ``sidecar_xml`` writes that sidecar whole: description,
unit, category names and, for a map written before (the raw label COG, whose bytes stay as
they are), its colour table too; every GDAL reader (QGIS, gdalinfo) reads it beside the file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pipeline.postprocess.legend import BandInfo, category_names, colormap


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

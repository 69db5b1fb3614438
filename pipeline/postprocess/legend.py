"""Legends: class colours (given, or a default palette where related land covers get related
colours) and the band metadata that make a map file open coloured and named in QGIS.

A label GeoTIFF/COG gets a GDAL colour table (inside the TIFF), a band description and unit
(inside, in GDAL's metadata tag), and category names: GDAL keeps those for a GeoTIFF in its
PAM sidecar ``<file>.aux.xml`` (as ``GDALSetRasterCategoryNames`` does; rasterio has no call for
it), which ``gdalinfo``, QGIS and every GDAL reader pick up beside the file. Apply the colour
table and descriptions to the GeoTIFF written before its COG copy (``apply_band_info``): the
COG driver copies them; then ``write_category_names`` next to the COG.
"""

from __future__ import annotations

import colorsys
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.model import ClassInfo
from pipeline.storage import atomic_path

# (keywords, base colour): the first group with a keyword that starts a word of the class name
# (a keyword of 3 letters must be the word: "sea" is not "seasonal"); the classes of one group
# get shades of its colour, in code order: the colour itself, then lighter and darker by turns.
GROUPS: tuple[tuple[str, str], ...] = (
    ("snow ice glacier", "#d8f0fa"),
    ("wetland marsh swamp bog mangrove peat", "#3aa6a0"),
    ("water river lake sea ocean reservoir lagoon", "#1f63c6"),
    (
        "urban built artificial building settlement road impervious city industrial residential",
        "#c0392b",
    ),
    (
        "crop cereal wheat maize corn soy rice cultivat agricult cotton sugar vineyard orchard "
        "arable farm annual perennial fallow",
        "#e8b120",
    ),
    ("forest tree wood broadleaf conifer decidu evergreen plantation", "#1b6b2a"),
    ("shrub scrub bush heath savanna thicket", "#7a8f2b"),
    ("grass pasture meadow herbaceous rangeland lawn prairie steppe", "#8fd16b"),
    ("bare rock sand soil desert barren mine quarry dune", "#b08a5a"),
    ("tundra moss lichen", "#9fb6a0"),
    ("cloud shadow nodata unclassified", "#9e9e9e"),
)


def _rgb(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(max(0.0, min(1.0, c)) * 255):02x}" for c in rgb)


def group_of(name: str) -> int | None:
    """The palette group of a class name (index in ``GROUPS``), or None."""
    words = re.findall(r"[a-z]+", name.lower())
    for i, (keywords, _) in enumerate(GROUPS):
        if any(
            word == k or (len(k) > 3 and word.startswith(k))
            for k in keywords.split()
            for word in words
        ):
            return i
    return None


def _shade(base: str, position: int, count: int) -> str:
    """The ``position``-th of ``count`` shades of ``base`` (the base first, then lighter and
    darker by turns, so two classes of one group stay apart)."""
    if count <= 1 or position == 0:
        return base
    h, lum, s = colorsys.rgb_to_hls(*(c / 255 for c in _rgb(base)))
    step = min(0.12, 0.5 / count)
    offset = ((position + 1) // 2) * step * (1 if position % 2 else -1)
    return _hex(colorsys.hls_to_rgb(h, min(0.9, max(0.12, lum + offset)), s))


def _distinct(code: int) -> str:
    """A deterministic colour for a class no group knows: golden-angle hues from its code."""
    hue = (code * 0.618033988749895) % 1.0
    return _hex(colorsys.hsv_to_rgb(hue, 0.55, 0.85))


def default_colors(classes: Sequence[tuple[int, str]]) -> dict[int, str]:
    """A colour per class code from its name: related land covers get related colours (forests
    greens, water blues, built-up reds, crops yellows, grass light greens...), other classes a
    deterministic distinct colour."""
    members: dict[int, list[int]] = {}
    for code, name in sorted(classes):
        group = group_of(name)
        if group is not None:
            members.setdefault(group, []).append(code)
    out: dict[int, str] = {}
    for code, name in sorted(classes):
        group = group_of(name)
        if group is None:
            out[code] = _distinct(code)
        else:
            codes = members[group]
            out[code] = _shade(GROUPS[group][1], codes.index(code), len(codes))
    return out


def legend(classes: Sequence[tuple[int, str, str | None]]) -> tuple[ClassInfo, ...]:
    """The legend of ``(code, name, colour or None)``: given colours kept, the others from
    ``default_colors``; in code order."""
    defaults = default_colors([(code, name) for code, name, _ in classes])
    return tuple(
        ClassInfo(code, name, color or defaults[code]) for code, name, color in sorted(classes)
    )


def colormap(entries: Sequence[ClassInfo]) -> dict[int, tuple[int, int, int, int]]:
    """A rasterio/GDAL colour table: each code its colour, opaque."""
    return {c.code: (*_rgb(c.color), 255) for c in entries}


@dataclass(frozen=True)
class BandInfo:
    """What a map band says about itself: description, unit, and for a label band its legend
    (``classes``: colour table and category names)."""

    description: str
    units: str | None = None
    classes: tuple[ClassInfo, ...] = ()


def apply_band_info(dataset: Any, info: BandInfo, band: int = 1) -> None:
    """Write ``info`` into an open rasterio dataset (mode "w" or "r+"): description, unit and,
    for a legend, the colour table (uint8/uint16 bands)."""
    dataset.set_band_description(band, info.description)
    if info.units:
        dataset.set_band_unit(band, info.units)
    if info.classes:
        dataset.write_colormap(band, colormap(info.classes))


def category_names(entries: Sequence[ClassInfo]) -> list[str]:
    """GDAL's category names: one per value from 0 to the largest code ("" where no class)."""
    names = [""] * (max(c.code for c in entries) + 1)
    for c in entries:
        names[c.code] = c.name
    return names


def write_category_names(path: Path, entries: Sequence[ClassInfo], band: int = 1) -> Path:
    """Write (or update) ``<path>.aux.xml``, GDAL's sidecar, with the category names of a
    label band; other content of an existing sidecar is kept."""
    sidecar = Path(f"{path}.aux.xml")
    root = ET.parse(sidecar).getroot() if sidecar.exists() else ET.Element("PAMDataset")
    node = next((b for b in root.findall("PAMRasterBand") if b.get("band") == str(band)), None)
    if node is None:
        node = ET.SubElement(root, "PAMRasterBand", band=str(band))
    for old in node.findall("CategoryNames"):
        node.remove(old)
    names = ET.SubElement(node, "CategoryNames")
    for name in category_names(entries):
        ET.SubElement(names, "Category").text = name
    ET.indent(root)
    with atomic_path(sidecar) as tmp:
        tmp.write_text(ET.tostring(root, encoding="unicode") + "\n")
    return sidecar


def read_category_names(path: Path, band: int = 1) -> list[str]:
    """The category names GDAL would read for ``band`` of ``path`` (its sidecar), or []."""
    sidecar = Path(f"{path}.aux.xml")
    if not sidecar.exists():
        return []
    for node in ET.parse(sidecar).getroot().findall("PAMRasterBand"):
        if node.get("band") == str(band):
            return [c.text or "" for c in node.findall("CategoryNames/Category")]
    return []


def band_infos(entries: Sequence[ClassInfo]) -> Mapping[str, BandInfo]:
    """The band metadata of each map product, by product name."""
    return {
        "labels": BandInfo(
            "land cover class (code; see the colour table and categories)", None, tuple(entries)
        ),
        "confidence": BandInfo("probability of the mapped class", "%"),
        "entropy": BandInfo("normalized entropy of the class probabilities (0: certain)", "%"),
        "margin": BandInfo("1 - (first - second largest class probability) (0: certain)", "%"),
    }

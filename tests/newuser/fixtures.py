"""Fixtures that reproduce what a new user's public data sets look like, made from the demo data.

* ``wkt2_catalog``: the demo catalog with its CRS replaced by MODIS sinusoidal (a CRS with no
  EPSG code), stated only as ``proj:wkt2`` (or ``proj:projjson``) in the items and in the files;
  the coordinates stay the same, so the reference (relabelled to the same CRS) still falls on it.
* ``text_reference``: the demo reference with text class labels (the names) instead of codes,
  optionally as points (one per polygon, its representative point).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import rasterio
from pyproj import CRS

from tests.conftest import DEMO_DIR

# MODIS sinusoidal (the CRS of the MODIS land products), which no EPSG code names.
SINUSOIDAL = CRS.from_proj4("+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m +no_defs")


def wkt2_catalog(folder: Path, *, projjson: bool = False) -> Path:
    """A copy of the demo catalog whose items state their CRS only as ``proj:wkt2`` (or
    ``proj:projjson``): no proj:code, no proj:epsg. Returns the catalog.json path."""
    target = folder / "catalog"
    shutil.copytree(DEMO_DIR / "catalog", target)
    wkt = SINUSOIDAL.to_wkt()
    for tif in target.rglob("*.tif"):  # rewritten as plain GeoTIFFs with the new CRS
        with rasterio.open(tif) as src:
            profile, data = src.profile, src.read()
        profile.update(driver="GTiff", crs=rasterio.crs.CRS.from_wkt(wkt))
        with rasterio.open(tif, "w", **profile) as dst:
            dst.write(data)
    for path in target.rglob("*.json"):
        doc = json.loads(path.read_text())
        if doc.get("type") != "Feature":
            continue
        for fields in (doc["properties"], *doc["assets"].values()):
            had = fields.pop("proj:code", None) or fields.pop("proj:epsg", None)
            fields.pop("proj:epsg", None)
            if had is not None:
                if projjson:
                    fields["proj:projjson"] = SINUSOIDAL.to_json_dict()
                else:
                    fields["proj:wkt2"] = wkt
        path.write_text(json.dumps(doc, indent=1))
    return target / "catalog.json"


def text_reference(folder: Path, *, points: bool = False, crs: CRS | None = None) -> Path:
    """The demo reference with its class names as the label field (``LULC_NAME`` only, no codes);
    ``points``: one point per polygon. ``crs`` relabels the coordinates (no reprojection)."""
    frame = gpd.read_file(DEMO_DIR / "reference" / "lulc.gpkg")
    frame = frame[frame["LULC_ID"] != 0][["LULC_NAME", "geometry"]].copy()
    if points:
        frame["geometry"] = frame.geometry.representative_point()
    if crs is not None:
        frame = frame.set_crs(crs, allow_override=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("points.gpkg" if points else "polygons.gpkg")
    frame.to_file(path)
    return path


def relabelled_reference(folder: Path, crs: CRS) -> Path:
    """The demo reference as it is, its coordinates stated in ``crs`` (no reprojection)."""
    frame = gpd.read_file(DEMO_DIR / "reference" / "lulc.gpkg").set_crs(crs, allow_override=True)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_file(folder / "lulc.gpkg")
    return folder / "lulc.gpkg"

"""Build the bundled Slovenia demo catalog: a static STAC catalog of NDVI and cloud-mask COGs.

Source: the eo-learn ``TestEOPatch`` (68 Sentinel-2 acquisitions over a ~1 km x 1 km patch in
Slovenia, EPSG:32633). Each acquisition becomes one STAC Item with two Cloud-Optimized GeoTIFFs:

* ``ndvi``  Int16, round(NDVI * 10000), nodata -32768 where ``IS_DATA == 0``;
* ``cloud`` UInt8, 0 = clear, 1 = cloud (``CLM``), 255 = no data.

The output is reproducible: running the script twice gives byte-identical files (no "now"
timestamps, sorted JSON keys, fixed GDAL creation options). Usage::

    python examples/slovenia/make_catalog.py [--source DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pystac
import rasterio
from pyproj import Transformer
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.transform import Affine, from_bounds

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = (HERE / "../../tests/data/eolearn-slovenia-s2").resolve()  # copy in the repo

CATALOG_ID = "slovenia-demo"
COLLECTION_ID = "slovenia-s2-ndvi"
ITEM_PREFIX = "slovenia-s2-"
EPSG = 32633

NDVI_SCALE = 1e-4
NDVI_NODATA = -32768
CLOUD_CLEAR, CLOUD_CLOUD, CLOUD_NODATA = 0, 1, 255

# Upstream commit the arrays were taken from (see the shared SOURCE.md).
EOLEARN_URL = "https://github.com/sentinel-hub/eo-learn"
EOLEARN_COMMIT = "303e7585"

# Fixed creation options so the bytes only depend on the pixels. The patch (100 x 101) fits in a
# single tile, so GDAL would build no overviews anyway; "NONE" makes that explicit.
COG_OPTIONS: dict[str, Any] = {
    "driver": "COG",
    "compress": "DEFLATE",
    "predictor": 2,
    "blocksize": 256,
    "overviews": "NONE",
    "bigtiff": "NO",
}

# Degrees are rounded to ~1 mm so that tiny PROJ version differences do not change the JSON.
LONLAT_DECIMALS = 8

CLOUD_CLASSES = [
    Classification.create(value=CLOUD_CLEAR, name="clear", description="Clear (no cloud)"),
    Classification.create(value=CLOUD_CLOUD, name="cloud", description="Cloud (eo-learn CLM)"),
    Classification.create(value=CLOUD_NODATA, name="no_data", description="No data", nodata=True),
]


@dataclass(frozen=True)
class Patch:
    """The arrays of the EOPatch that go into the catalog, with the last (band) axis dropped."""

    ndvi: npt.NDArray[np.float32]  # (t, y, x)
    cloud: npt.NDArray[np.bool_]  # (t, y, x), True = cloud
    is_data: npt.NDArray[np.bool_]  # (t, y, x), True = valid observation
    times: list[datetime]  # UTC, one per t
    bbox: tuple[float, float, float, float]  # (minx, miny, maxx, maxy) in EPSG:32633

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.ndvi.shape[1]), int(self.ndvi.shape[2])

    @property
    def transform(self) -> Affine:
        # Pixels are not square (~9.995 m x ~9.998 m): keep the exact bbox/shape affine.
        height, width = self.shape
        return from_bounds(*self.bbox, width=width, height=height)


def load_patch(source: Path) -> Patch:
    """Read the NDVI, cloud and data masks, timestamps and extent of the eo-learn TestEOPatch."""
    root = source / "TestEOPatch"
    ndvi = np.load(root / "data" / "NDVI.npy")[..., 0]
    cloud = np.load(root / "mask" / "CLM.npy")[..., 0].astype(bool)
    is_data = np.load(root / "mask" / "IS_DATA.npy")[..., 0].astype(bool)
    stamps = json.loads((root / "timestamps.json").read_text(encoding="utf-8"))
    # eo-learn stores naive ISO times that are UTC.
    times = [datetime.fromisoformat(s).replace(tzinfo=UTC) for s in stamps]

    geojson = json.loads((root / "bbox.geojson").read_text(encoding="utf-8"))
    crs_name = geojson.get("crs", {}).get("properties", {}).get("name", "")
    if not crs_name.endswith(f"EPSG::{EPSG}"):
        raise ValueError(f"expected the bbox in EPSG:{EPSG}, got {crs_name!r}")
    xs, ys = zip(*geojson["coordinates"][0], strict=True)
    bbox = (min(xs), min(ys), max(xs), max(ys))

    if not (ndvi.shape == cloud.shape == is_data.shape and ndvi.shape[0] == len(times)):
        raise ValueError(f"inconsistent arrays: {ndvi.shape}, {cloud.shape}, {is_data.shape}")
    if times != sorted(times):
        raise ValueError("timestamps are not sorted")
    return Patch(ndvi=ndvi, cloud=cloud, is_data=is_data, times=times, bbox=bbox)


def item_id(time: datetime) -> str:
    # Two acquisitions share 2015-12-08, so the id carries the time of day too.
    return ITEM_PREFIX + time.strftime("%Y%m%dT%H%M%S")


def footprint_lonlat(bbox: Sequence[float]) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon and bbox in EPSG:4326 of a bbox in the patch CRS.

    The patch is ~1 km wide, so the UTM edges are straight lines in lon/lat to well under a mm:
    reprojecting the four corners is enough.
    """
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    minx, miny, maxx, maxy = bbox
    corners = [(minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy)]
    ring = []
    for x, y in corners:
        lon, lat = to_lonlat.transform(x, y)
        ring.append([round(lon, LONLAT_DECIMALS), round(lat, LONLAT_DECIMALS)])
    ring.append(ring[0])
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    return {"type": "Polygon", "coordinates": [ring]}, [min(lons), min(lats), max(lons), max(lats)]


def write_cog(
    path: Path, data: npt.NDArray[Any], transform: Affine, nodata: float, description: str
) -> None:
    """Write a single-band COG with fixed options (rasterio's COG driver goes via CreateCopy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        **COG_OPTIONS,
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{EPSG}",
        "transform": transform,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        # The file keeps scale 1: the NDVI scale lives in raster:bands only, so readers that
        # honour both (GDAL scale and STAC) cannot apply it twice.
        dst.set_band_description(1, description)


def ndvi_int16(ndvi: npt.NDArray[np.float32], is_data: npt.NDArray[np.bool_]) -> npt.NDArray:
    scaled = np.round(ndvi.astype(np.float64) / NDVI_SCALE)
    # NaN or out-of-range values would not survive the int16 cast: mark them as no data.
    valid = is_data & np.isfinite(scaled) & (np.abs(scaled) <= 10000)
    out = np.full(ndvi.shape, NDVI_NODATA, dtype=np.int16)
    out[valid] = scaled[valid].astype(np.int16)
    return out


def cloud_uint8(cloud: npt.NDArray[np.bool_], is_data: npt.NDArray[np.bool_]) -> npt.NDArray:
    out = np.where(cloud, CLOUD_CLOUD, CLOUD_CLEAR).astype(np.uint8)
    out[~is_data] = CLOUD_NODATA
    return out


def cloud_cover_percent(cloud: npt.NDArray[np.bool_], is_data: npt.NDArray[np.bool_]) -> float:
    n_data = int(is_data.sum())
    if n_data == 0:
        return 100.0
    return round(100.0 * int((cloud & is_data).sum()) / n_data, 2)


def ndvi_band() -> RasterBand:
    return RasterBand.create(
        nodata=NDVI_NODATA, data_type=DataType.INT16, scale=NDVI_SCALE, offset=0.0
    )


def cloud_band() -> RasterBand:
    return RasterBand.create(nodata=CLOUD_NODATA, data_type=DataType.UINT8)


def add_ndvi_asset(item: pystac.Item, href: str) -> None:
    asset = pystac.Asset(
        href=href,
        media_type=pystac.MediaType.COG,
        title="NDVI",
        description=f"NDVI x 10000 as Int16; multiply by {NDVI_SCALE} to get NDVI.",
        roles=["data"],
    )
    # Extensions need the asset to have an owner before they can register their schema.
    item.add_asset("ndvi", asset)
    RasterExtension.ext(asset, add_if_missing=True).bands = [ndvi_band()]


def add_cloud_asset(item: pystac.Item, href: str) -> None:
    asset = pystac.Asset(
        href=href,
        media_type=pystac.MediaType.COG,
        title="Cloud mask",
        description="eo-learn CLM cloud mask: 0 = clear, 1 = cloud, 255 = no data.",
        roles=["cloud", "data-mask"],
    )
    item.add_asset("cloud", asset)
    RasterExtension.ext(asset, add_if_missing=True).bands = [cloud_band()]
    ClassificationExtension.ext(asset, add_if_missing=True).classes = CLOUD_CLASSES


def build_item(patch: Patch, t: int, item_dir: Path) -> pystac.Item:
    """One Item for acquisition ``t``; its COGs are written to ``item_dir``."""
    time = patch.times[t]
    iid = item_id(time)
    geometry, bbox_ll = footprint_lonlat(patch.bbox)
    item = pystac.Item(
        id=iid,
        geometry=geometry,
        bbox=bbox_ll,
        datetime=time,
        properties={},
    )
    # The platform (S2A/S2B) is not recorded in the EOPatch, so only the constellation is set.
    item.common_metadata.constellation = "sentinel-2"
    item.common_metadata.instruments = ["msi"]

    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = f"EPSG:{EPSG}"
    proj.shape = list(patch.shape)
    proj.transform = [float(v) for v in tuple(patch.transform)[:6]]
    proj.bbox = [float(v) for v in patch.bbox]
    # proj v2 replaced proj:epsg by proj:code; older readers (e.g. stackstac) still look for it.
    item.properties["proj:epsg"] = EPSG

    is_data = patch.is_data[t]
    cloud = patch.cloud[t]
    EOExtension.ext(item, add_if_missing=True).cloud_cover = cloud_cover_percent(cloud, is_data)

    ndvi_path = item_dir / f"{iid}_NDVI.tif"
    cloud_path = item_dir / f"{iid}_CLOUD.tif"
    write_cog(
        ndvi_path, ndvi_int16(patch.ndvi[t], is_data), patch.transform, NDVI_NODATA, "NDVI x 10000"
    )
    write_cog(cloud_path, cloud_uint8(cloud, is_data), patch.transform, CLOUD_NODATA, "cloud mask")
    # Absolute for now; made relative to the item before saving (SELF_CONTAINED).
    add_ndvi_asset(item, str(ndvi_path))
    add_cloud_asset(item, str(cloud_path))
    return item


def build_collection(patch: Patch, cloud_covers: list[float]) -> pystac.Collection:
    _, bbox_ll = footprint_lonlat(patch.bbox)
    collection = pystac.Collection(
        id=COLLECTION_ID,
        title="Sentinel-2 NDVI and cloud mask, Slovenia demo patch",
        description=(
            "68 Sentinel-2 acquisitions (2015-2017) of a ~1 km x 1 km patch in Slovenia "
            "(EPSG:32633, ~10 m pixels), from the eo-learn TestEOPatch example data: "
            "NDVI (Int16, scale 1e-4) and the CLM cloud mask as COGs."
        ),
        extent=pystac.Extent(
            spatial=pystac.SpatialExtent([bbox_ll]),
            temporal=pystac.TemporalExtent([[patch.times[0], patch.times[-1]]]),
        ),
        license="MIT",
        keywords=["sentinel-2", "ndvi", "cloud mask", "slovenia", "eo-learn", "demo"],
        providers=[
            pystac.Provider(
                name="European Space Agency (ESA) / Copernicus",
                roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.LICENSOR],
                url="https://sentinels.copernicus.eu/",
                description="Sentinel-2 data: contains modified Copernicus Sentinel data.",
            ),
            pystac.Provider(
                name="Sentinel Hub (Sinergise)",
                roles=[pystac.ProviderRole.PROCESSOR, pystac.ProviderRole.HOST],
                url="https://www.sentinel-hub.com/",
            ),
            pystac.Provider(
                name="eo-learn",
                roles=[pystac.ProviderRole.PROCESSOR],
                url=EOLEARN_URL,
                description="TestEOPatch example data (NDVI, CLM, IS_DATA, LULC), MIT licence.",
            ),
        ],
    )
    collection.summaries.add("constellation", ["sentinel-2"])
    collection.summaries.add("instruments", ["msi"])
    collection.summaries.add("proj:code", [f"EPSG:{EPSG}"])
    collection.summaries.add(
        "eo:cloud_cover", pystac.RangeSummary(min(cloud_covers), max(cloud_covers))
    )
    ClassificationExtension.summaries(collection, add_if_missing=True).classes = CLOUD_CLASSES

    ndvi_def = pystac.ItemAssetDefinition.create(
        title="NDVI", description=None, media_type=pystac.MediaType.COG, roles=["data"]
    )
    ndvi_def.properties["raster:bands"] = [ndvi_band().to_dict()]
    cloud_def = pystac.ItemAssetDefinition.create(
        title="Cloud mask",
        description=None,
        media_type=pystac.MediaType.COG,
        roles=["cloud", "data-mask"],
    )
    cloud_def.properties["raster:bands"] = [cloud_band().to_dict()]
    cloud_def.properties["classification:classes"] = [c.to_dict() for c in CLOUD_CLASSES]
    collection.item_assets = {"ndvi": ndvi_def, "cloud": cloud_def}
    collection.stac_extensions = sorted(
        {*collection.stac_extensions, RasterExtension.get_schema_uri()}
    )

    # Relative hrefs to files beside the catalog, kept as-is by pystac for non-STAC links.
    collection.add_link(pystac.Link("license", "../../LICENSE", media_type="text/plain"))
    collection.add_link(
        pystac.Link(
            "via",
            f"{EOLEARN_URL}/tree/{EOLEARN_COMMIT}/example_data/TestEOPatch",
            media_type="text/html",
            title="eo-learn TestEOPatch",
        )
    )
    return collection


class SortedJsonStacIO(pystac.stac_io.DefaultStacIO):
    """Writes STAC JSON with sorted keys and a final newline, whatever JSON library is present."""

    def json_dumps(self, json_dict: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        return json.dumps(json_dict, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


SOURCE_MD = """\
# Slovenia demo catalog: provenance

Generated by `make_catalog.py` in this folder; do not edit the files under `catalog/` by hand.

## Source

eo-learn (github.com/sentinel-hub/eo-learn), `example_data/TestEOPatch/`, commit {commit}
(2024-06-26). MIT licence (`LICENSE` here). The patch is a ~1 km x 1 km area in Slovenia,
extent (465181.05, 5079244.89, 466180.53, 5080254.63) in EPSG:32633, 100 columns x 101 rows
(~10 m pixels), 68 Sentinel-2 acquisitions from {first} to {last}.
Contains modified Copernicus Sentinel data, processed by Sentinel Hub and eo-learn.

Inputs used: `data/NDVI.npy`, `mask/CLM.npy` (1 = cloud), `mask/IS_DATA.npy` (1 = data),
`timestamps.json`, `bbox.geojson`, `vector_timeless/LULC.gpkg`.

## What the script changed

- One STAC Item per acquisition, id `slovenia-s2-YYYYMMDDTHHMMSS` (two acquisitions fall on
  2015-12-08, hence the time of day), datetime = the timestamp read as UTC.
- `ndvi` asset: NDVI scaled to Int16, value = round(NDVI x 10000), nodata -32768 where
  IS_DATA = 0 (`raster:bands` scale 0.0001, offset 0).
- `cloud` asset: UInt8, 0 = clear, 1 = cloud (CLM), 255 = no data (IS_DATA = 0).
- `eo:cloud_cover` = percent of cloudy pixels among the pixels with data.
- Rasters are COGs (DEFLATE, predictor 2, 256 px tiles, no overviews) in EPSG:32633 with the
  exact bbox/shape transform (pixels are slightly non-square).
- `reference/lulc.gpkg` is a byte copy of `vector_timeless/LULC.gpkg` (land-use polygons,
  fields LULC_ID, LULC_NAME, AREA, DATE, RABA_ID; EPSG:32633).
- The 13-band reflectances of the original patch are not included.

## Regenerate

    python examples/slovenia/make_catalog.py --source /path/to/eolearn-slovenia-s2

The output is byte-identical from one run to the next.
"""


def clear_previous(catalog_dir: Path) -> None:
    """Remove an earlier run's catalog so that stale items do not linger; refuse anything else."""
    if not catalog_dir.exists():
        return
    root_json = catalog_dir / "catalog.json"
    try:
        ours = json.loads(root_json.read_text(encoding="utf-8")).get("id") == CATALOG_ID
    except (OSError, ValueError):
        # An interrupted run leaves the collection folder without catalog.json.
        ours = {p.name for p in catalog_dir.iterdir()} <= {"catalog.json", COLLECTION_ID}
    if not ours:
        raise FileExistsError(f"{catalog_dir} exists and is not a {CATALOG_ID} catalog")
    shutil.rmtree(catalog_dir)


def make_catalog(source: Path, out: Path) -> pystac.Catalog:
    """Write the catalog, reference polygons, LICENSE and SOURCE.md under ``out``."""
    patch = load_patch(source)
    catalog_dir = out / "catalog"
    clear_previous(catalog_dir)
    collection_dir = catalog_dir / COLLECTION_ID

    # pystac's default layout puts each item at <collection>/<id>/<id>.json; the COGs go beside.
    items = [
        build_item(patch, t, collection_dir / item_id(time)) for t, time in enumerate(patch.times)
    ]
    collection = build_collection(patch, [EOExtension.ext(i).cloud_cover or 0.0 for i in items])
    collection.add_items(items)

    catalog = pystac.Catalog(
        id=CATALOG_ID,
        title="sitsflow Slovenia demo",
        description=(
            "Small static catalog bundled with sitsflow: a real Sentinel-2 NDVI time series "
            "with cloud masks over a ~1 km patch in Slovenia, and land-use reference polygons "
            "in ../reference/lulc.gpkg."
        ),
    )
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(catalog_dir))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=SortedJsonStacIO())

    reference = out / "reference"
    reference.mkdir(parents=True, exist_ok=True)
    # copyfile, not copy2: the shared files are read-only and their mtime is irrelevant.
    shutil.copyfile(
        source / "TestEOPatch" / "vector_timeless" / "LULC.gpkg", reference / "lulc.gpkg"
    )
    shutil.copyfile(source / "LICENSE", out / "LICENSE")
    (out / "SOURCE.md").write_text(
        SOURCE_MD.format(
            commit=EOLEARN_COMMIT,
            first=patch.times[0].date().isoformat(),
            last=patch.times[-1].date().isoformat(),
        ),
        encoding="utf-8",
    )
    return catalog


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="eolearn-slovenia-s2 folder (holding TestEOPatch/, LICENSE). Default: %(default)s",
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="output folder. Default: %(default)s"
    )
    args = parser.parse_args(argv)
    catalog = make_catalog(args.source.resolve(), args.out.resolve())
    n_items = sum(1 for _ in catalog.get_items(recursive=True))
    print(f"wrote {n_items} items to {args.out.resolve() / 'catalog' / 'catalog.json'}")


if __name__ == "__main__":
    main()

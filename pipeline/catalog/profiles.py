"""The built-in sensor profiles: descriptions, not code.

Each profile says which item assets hold which bands (with the keys used by THEIA/simplestac,
Earth Search, Planetary Computer and CDSE catalogs), the native resolution, scale, offset and
no-data of each band, and the rules that turn its quality layers into invalid pixels. Adding a
sensor is adding an entry to ``BUILT_IN``. The user-facing table is docs/sensors.md.

Mask rules follow the providers' format descriptions and the original chain (iota2):

* THEIA L2A (MAJA): CLM, EDG any flag set -> invalid; SAT one bit per band (R1: B2 B3 B4 B8,
  R2: B5 B6 B7 B8A B11 B12), only the bits of the bands read count.
* THEIA L3A (WASP): FLG 0 no data, 1 cloud -> invalid (2 snow, 3 water, 4 land valid).
* Sen2Cor: SCL 0 no data, 1 saturated/defective, 3 cloud shadow, 8/9 cloud, 10 cirrus -> invalid.
* Landsat Collection 2 L2: QA_PIXEL bits 0 fill, 1 dilated cloud, 2 cirrus (OLI), 3 cloud,
  4 cloud shadow -> invalid; QA_RADSAT one bit per band (band n -> bit n-1).
* THEIA historical Landsat 8 (N2A): DIV odd (bit 0 no data), NUA or SAT non-zero -> invalid.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from pipeline.catalog.sensors import (
    BandRead,
    Choice,
    MaskRule,
    ProfileOption,
    PropertyOffset,
    SensorProfile,
    Series,
)
from pipeline.errors import ManifestError

GENERIC = "generic"
"""Not a table entry: the sensor's bands and masks are described in the manifest itself."""

# name, sensor band id, native resolution (m), STAC common name: the Sentinel-2 MSI bands read.
_S2_BANDS: tuple[tuple[str, str, float, str], ...] = (
    ("blue", "B02", 10, "blue"),
    ("green", "B03", 10, "green"),
    ("red", "B04", 10, "red"),
    ("rededge1", "B05", 20, "rededge"),
    ("rededge2", "B06", 20, "rededge"),
    ("rededge3", "B07", 20, "rededge"),
    ("nir", "B08", 10, "nir"),
    ("nir08", "B8A", 20, "nir08"),
    ("swir16", "B11", 20, "swir16"),
    ("swir22", "B12", 20, "swir22"),
)
_S2_R1 = ("blue", "green", "red", "nir")  # bit order of THEIA's 10 m saturation mask
_S2_R2 = ("rededge1", "rededge2", "rededge3", "nir08", "swir16", "swir22")


def _theia_digit(band_id: str) -> str:
    """THEIA file names drop the leading zero: B02 -> B2, B8A stays."""
    return "B" + band_id[1:].lstrip("0")


def _snow_option(
    asset: str, *, values: tuple[int, ...] = (), bits: tuple[int, ...] = ()
) -> ProfileOption:
    return ProfileOption(
        name="snow",
        description="Whether snow-covered pixels are kept as valid observations.",
        default="valid",
        choices=(
            Choice("valid", "snow is a valid observation (mapped as land cover)"),
            Choice(
                "invalid",
                "snow pixels are masked and gap-filled",
                add_invalid_values=((asset, values),) if values else (),
                add_invalid_bits=((asset, bits),) if bits else (),
            ),
        ),
    )


def _theia_s2(product: str) -> tuple[BandRead, ...]:
    return tuple(
        BandRead(
            name,
            asset=band_id,
            scale=1e-4,
            nodata=-10000,
            asset_keys=(band_id, f"{product}_{_theia_digit(band_id)}"),
            resolution=res,
            sensor_band=band_id,
            common_name=common,
        )
        for name, band_id, res, common in _S2_BANDS
    )


SENTINEL2_L2A_THEIA = SensorProfile(
    name="sentinel2-l2a-theia",
    title="Sentinel-2 L2A, THEIA / MUSCATE (MAJA), flat reflectance FRE",
    collections=("SENTINEL2_L2A_THEIA", "sentinel2-l2a-theia"),
    bands=_theia_s2("FRE"),
    masks=(
        MaskRule("CLM_R1", valid_values=(0,), description="clouds and cloud shadows, any flag"),
        MaskRule("EDG_R1", valid_values=(0,), description="outside the swath / no data"),
        MaskRule(
            "SAT_R1",
            band_bits=tuple((b, i) for i, b in enumerate(_S2_R1)),
            description="saturation of the 10 m bands, one bit per band",
        ),
        MaskRule(
            "SAT_R2",
            band_bits=tuple((b, i) for i, b in enumerate(_S2_R2)),
            description="saturation of the 20 m bands, one bit per band",
        ),
    ),
    date_step_days=10,
)

SENTINEL2_L3A_THEIA = SensorProfile(
    name="sentinel2-l3a-theia",
    title="Sentinel-2 L3A, THEIA monthly syntheses (WASP), FRC",
    collections=("SENTINEL2_L3A_THEIA", "sentinel2-l3a-theia"),
    bands=_theia_s2("FRC"),
    masks=(MaskRule("FLG_R1", invalid_values=(0, 1), description="0 no data, 1 cloud (2 snow)"),),
    options=(_snow_option("FLG_R1", values=(2,)),),
    date_step_days=30,
)

SENTINEL2_L2A_SEN2COR = SensorProfile(
    name="sentinel2-l2a-sen2cor",
    title="Sentinel-2 L2A, ESA Sen2Cor (Earth Search, Planetary Computer, CDSE)",
    collections=("sentinel-2-l2a", "sentinel-2-c1-l2a", "SENTINEL-2"),
    bands=tuple(
        BandRead(
            name,
            asset=name,
            scale=1e-4,
            nodata=0,
            asset_keys=(name, band_id, f"{band_id}_{res:.0f}m"),
            resolution=res,
            sensor_band=band_id,
            common_name=common,
        )
        for name, band_id, res, common in _S2_BANDS
    ),
    masks=(
        MaskRule(
            "scl",
            invalid_values=(0, 1, 3, 8, 9, 10),
            asset_keys=("scl", "SCL", "SCL_20m"),
            description="scene classification: no data, defective, shadow, clouds, cirrus",
        ),
    ),
    offsets=(
        PropertyOffset(
            "s2:processing_baseline",
            at_least="04.00",
            raw_offset=-1000,
            applied_flag="earthsearch:boa_offset_applied",
        ),
    ),
    options=(
        _snow_option("scl", values=(11,)),
        ProfileOption(
            name="boa_offset",
            description="The -1000 reflectance offset of processing baseline 04.00 and later.",
            default="auto",
            choices=(
                Choice("auto", "from each item's s2:processing_baseline", offset_mode="auto"),
                Choice("always", "every item carries it", offset_mode="always"),
                Choice("never", "no item carries it (harmonized archive)", offset_mode="never"),
            ),
        ),
    ),
    date_step_days=10,
)


def _landsat(
    name: str,
    title: str,
    bands: Sequence[tuple[str, int, str]],
    cloud_bits: tuple[int, ...],
    radsat_flags: tuple[int, ...],
    collections: tuple[str, ...],
) -> SensorProfile:
    """A Landsat Collection 2 Level-2 profile; ``bands`` are (name, SR band number, common)."""
    return SensorProfile(
        name=name,
        title=title,
        collections=collections,
        bands=tuple(
            BandRead(
                band,
                asset=band,
                scale=2.75e-5,
                offset=-0.2,
                nodata=0,
                asset_keys=tuple(dict.fromkeys((band, common, f"SR_B{number}", f"sr_b{number}"))),
                resolution=30,
                sensor_band=f"SR_B{number}",
                common_name=common,
            )
            for band, number, common in bands
        ),
        masks=(
            MaskRule(
                "qa_pixel",
                invalid_bits=cloud_bits,
                asset_keys=("qa_pixel", "QA_PIXEL"),
                description=", ".join(_QA_PIXEL_BITS[b] for b in cloud_bits),
            ),
            MaskRule(
                "qa_radsat",
                invalid_bits=radsat_flags,
                band_bits=tuple((band, number - 1) for band, number, _ in bands),
                asset_keys=("qa_radsat", "QA_RADSAT"),
                description="radiometric saturation, one bit per band",
            ),
        ),
        options=(
            _snow_option("qa_pixel", bits=(5,)),
            ProfileOption(
                name="saturation",
                description="Whether QA_RADSAT (saturated bands) is read.",
                default="mask",
                choices=(
                    Choice("mask", "pixels saturated in a band read are invalid"),
                    Choice("ignore", "QA_RADSAT is not read", drop_masks=("qa_radsat",)),
                ),
            ),
        ),
        date_step_days=16,
    )


_QA_PIXEL_BITS = {0: "fill", 1: "dilated cloud", 2: "cirrus", 3: "cloud", 4: "cloud shadow"}

_OLI = (
    ("coastal", 1, "coastal"),
    ("blue", 2, "blue"),
    ("green", 3, "green"),
    ("red", 4, "red"),
    ("nir", 5, "nir08"),
    ("swir16", 6, "swir16"),
    ("swir22", 7, "swir22"),
)
_TM = (
    ("blue", 1, "blue"),
    ("green", 2, "green"),
    ("red", 3, "red"),
    ("nir", 4, "nir08"),
    ("swir16", 5, "swir16"),
    ("swir22", 7, "swir22"),
)

LANDSAT_C2_L2_OLI = _landsat(
    "landsat-c2-l2-oli",
    "Landsat 8/9 OLI, USGS Collection 2 Level-2 surface reflectance",
    _OLI,
    cloud_bits=(0, 1, 2, 3, 4),
    radsat_flags=(11,),  # terrain occlusion
    collections=("landsat-c2-l2", "landsat-c2l2-sr"),
)
LANDSAT_C2_L2_TM = _landsat(
    "landsat-c2-l2-tm",
    "Landsat 4/5 TM, USGS Collection 2 Level-2 surface reflectance",
    _TM,
    cloud_bits=(0, 1, 3, 4),  # no cirrus band
    radsat_flags=(9,),  # dropped pixel
    collections=("landsat-c2-l2", "landsat-c2l2-sr"),
)
LANDSAT_C2_L2_ETM = _landsat(
    "landsat-c2-l2-etm",
    "Landsat 7 ETM+, USGS Collection 2 Level-2 surface reflectance",
    _TM,
    cloud_bits=(0, 1, 3, 4),
    radsat_flags=(9,),
    collections=("landsat-c2-l2", "landsat-c2l2-sr"),
)

_N2A_STACK = "ORTHO_SURF_CORR_PENTE"
LANDSAT8_N2A_THEIA = SensorProfile(
    name="landsat8-n2a-theia",
    title="Landsat 8 OLI, THEIA historical L2A (N2A, ORTHO_SURF_CORR_PENTE stack)",
    collections=("LANDSAT8_N2A_THEIA", "landsat8-n2a-theia"),
    bands=tuple(
        BandRead(
            band,
            asset=f"{_N2A_STACK}_B{number}",
            scale=1e-3,
            nodata=-10000,
            band_index=number,
            asset_keys=(_N2A_STACK,),
            resolution=30,
            sensor_band=f"B{number}",
            common_name=common,
        )
        for band, number, common in _OLI
    ),
    masks=(
        MaskRule("DIV", invalid_bits=(0,), description="bit 0: no data"),
        MaskRule("NUA", valid_values=(0,), description="clouds, any flag"),
        MaskRule("SAT", valid_values=(0,), description="saturation, any band"),
    ),
    date_step_days=16,
)

SENTINEL1 = SensorProfile(
    name="sentinel1",
    title="Sentinel-1 IW backscatter VV/VH (RTC or calibrated GRD, linear power)",
    collections=("sentinel-1-rtc", "sentinel-1-grd", "S1_RTC_GEODES"),
    bands=(
        BandRead(
            "vv",
            asset="vv",
            asset_keys=("vv", "VV"),
            resolution=10,
            sensor_band="VV",
            reflectance=False,
        ),
        BandRead(
            "vh",
            asset="vh",
            asset_keys=("vh", "VH"),
            resolution=10,
            sensor_band="VH",
            reflectance=False,
        ),
    ),
    masks=(),
    series=(
        Series("asc", "sat:orbit_state", "ascending"),
        Series("des", "sat:orbit_state", "descending"),
    ),
    options=(
        ProfileOption(
            name="units",
            description="Backscatter units in the cube.",
            default="linear",
            choices=(
                Choice("linear", "linear power, as delivered", to_db=False),
                Choice("db", "10 * log10(linear); values <= 0 become gaps", to_db=True),
            ),
        ),
        ProfileOption(
            name="orbits",
            description="How ascending and descending passes become series (sensors).",
            default="separate",
            choices=(
                Choice(
                    "separate",
                    "two sensors, <name>_asc and <name>_des",
                    series=(
                        Series("asc", "sat:orbit_state", "ascending"),
                        Series("des", "sat:orbit_state", "descending"),
                    ),
                ),
                Choice(
                    "ascending",
                    "only ascending passes, sensor <name>_asc",
                    series=(Series("asc", "sat:orbit_state", "ascending"),),
                ),
                Choice(
                    "descending",
                    "only descending passes, sensor <name>_des",
                    series=(Series("des", "sat:orbit_state", "descending"),),
                ),
                Choice("together", "one sensor <name> mixing both passes", series=()),
            ),
        ),
    ),
    date_step_days=12,
)

EMBEDDING_CHANNELS = 64
EMBEDDING_SCALE = 1 / 127
_EMBEDDING_STACK = "embedding"
EMBEDDINGS_ANNUAL = SensorProfile(
    name="embeddings-annual",
    title=f"Annual embedding product: {EMBEDDING_CHANNELS} channels, int8 scaled by 1/127 "
    "(one multi-band COG per year)",
    collections=("embeddings-annual",),
    bands=tuple(
        BandRead(
            f"e{index:02d}",
            asset=f"{_EMBEDDING_STACK}_e{index:02d}",
            scale=EMBEDDING_SCALE,
            nodata=-128,
            band_index=index + 1,
            asset_keys=(_EMBEDDING_STACK,),
            resolution=10,
            sensor_band=f"A{index:02d}",
            # Values within -1..1: the int16 cube encoding's reflectance range (steps of 1e-4,
            # finer than the product's own 1/127).
            reflectance=True,
        )
        for index in range(EMBEDDING_CHANNELS)
    ),
    masks=(),
    date_step_days=365,
)

BUILT_IN: dict[str, SensorProfile] = {
    p.name: p
    for p in (
        SENTINEL2_L2A_THEIA,
        SENTINEL2_L3A_THEIA,
        SENTINEL2_L2A_SEN2COR,
        LANDSAT_C2_L2_OLI,
        LANDSAT_C2_L2_TM,
        LANDSAT_C2_L2_ETM,
        LANDSAT8_N2A_THEIA,
        SENTINEL1,
        EMBEDDINGS_ANNUAL,
    )
}


def known_profiles() -> tuple[str, ...]:
    """Every name ``profile:`` accepts."""
    return (*BUILT_IN, GENERIC)


def unknown_profile_message(name: str) -> tuple[str, str]:
    """(problem, fix) for a profile name that is not built in."""
    close = difflib.get_close_matches(name, known_profiles(), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    problem = f"{name!r} is not a built-in sensor profile (known: {', '.join(known_profiles())})"
    fix = f"{hint}use one of the known names, or leave profile out to describe the bands yourself"
    return problem, fix


def profile_by_name(name: str, *, field: str | None = None) -> SensorProfile:
    """The built-in profile template called ``name``."""
    try:
        return BUILT_IN[name]
    except KeyError:
        problem, fix = unknown_profile_message(name)
        raise ManifestError(problem, fix=fix, field=field) from None

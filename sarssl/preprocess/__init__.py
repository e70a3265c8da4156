"""SAR preprocessing: calibration, speckle filters, seasonal composites, terrain, co-registration."""

from sarssl.preprocess.calibration import (
    calibrate, interpolate_vectors, noise_grid, parse_calibration_xml, parse_noise_xml, read_calibration,
    read_image_shape, read_noise,
)
from sarssl.preprocess.composites import (
    decode_m3leo, encode_m3leo, s1grd_composite, s1grd_to_input_channels, season_mask, seasonal_composite,
)
from sarssl.preprocess.coregister import from_grid, to_grid
from sarssl.preprocess.db import from_db, to_db
from sarssl.preprocess.nodata import declared_nodata, mask_nodata
from sarssl.preprocess.quality import edge_preservation_index, enl, ratio_image_stats
from sarssl.preprocess.speckle import boxcar, enhanced_lee, frost, gamma_map, lee, lee_sigma, refined_lee
from sarssl.preprocess.terrain import (
    LAYOVER, NODATA, SHADOW, layover_shadow_mask, local_incidence_angle, look_azimuth, surface_normal, terrain_flatten,
)

__all__ = [
    "calibrate", "interpolate_vectors", "noise_grid", "parse_calibration_xml", "parse_noise_xml",
    "read_calibration", "read_image_shape", "read_noise",
    "decode_m3leo", "encode_m3leo", "s1grd_composite", "s1grd_to_input_channels", "season_mask",
    "seasonal_composite", "from_grid", "to_grid", "from_db", "to_db", "declared_nodata", "mask_nodata",
    "edge_preservation_index", "enl", "ratio_image_stats",
    "boxcar", "enhanced_lee", "frost", "gamma_map", "lee", "lee_sigma", "refined_lee",
    "LAYOVER", "NODATA", "SHADOW", "layover_shadow_mask", "local_incidence_angle", "look_azimuth", "surface_normal",
    "terrain_flatten",
]

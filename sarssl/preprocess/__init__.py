"""SAR preprocessing: calibration, speckle filters, seasonal composites, terrain, co-registration."""

"""sarssl: self-supervised learning for Synthetic Aperture Radar (the package behind the sarssl book)."""

__version__ = "0.1.0"

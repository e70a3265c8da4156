"""Data: the M3LEO layout and products, the SAR-world simulator, datasets and transforms."""

"""Colour-blind-safe categorical colours in the shared figures; WorldCover keeps its official legend."""

import matplotlib

matplotlib.use("Agg")

import re  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from sarssl.data.products import WORLDCOVER_COLORS  # noqa: E402
from sarssl.plots import METHOD_COLORS, SPLIT_COLORS, plot_label_efficiency, worldcover_cmap  # noqa: E402
from sarssl.preprocess.plots import OKABE_ITO, categorical_color, plot_power_histograms  # noqa: E402

MODULES = [Path(__file__).resolve().parents[1] / "sarssl" / name for name in ("plots.py", "preprocess/plots.py")]


def test_okabe_ito_palette():
    assert len(set(c.lower() for c in OKABE_ITO)) == len(OKABE_ITO) == 8
    assert [categorical_color(i) for i in range(10)] == list(OKABE_ITO) + list(OKABE_ITO[:2])


def test_named_category_colours_are_okabe_ito():
    assert set(SPLIT_COLORS.values()) <= set(OKABE_ITO) and len(set(SPLIT_COLORS.values())) == 3
    assert set(METHOD_COLORS.values()) <= set(OKABE_ITO) and len(set(METHOD_COLORS.values())) == 4


def test_no_default_cycle_colours_in_the_plot_modules():
    """tab10 (matplotlib's default cycle, "C0".."C9") is not colour-blind safe."""
    pattern = re.compile(r"""["']C\d["']|f["']C\{|["']tab:|tab10|tab20""")
    for path in MODULES:
        hits = [f"{path.name}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
                if pattern.search(line)]
        assert not hits, "default-cycle colours:\n" + "\n".join(hits)


def test_figures_draw_with_the_palette():
    rng = np.random.default_rng(0)
    fig = plot_power_histograms(rng.normal(-10, 3, (20, 20)), rng.normal(-17, 3, (20, 20)))
    colours = {to_hex(p.get_facecolor(), keep_alpha=False) for p in fig.axes[0].patches}
    assert colours == {OKABE_ITO[0].lower(), OKABE_ITO[1].lower()}
    plt.close(fig)

    df = pd.DataFrame({"task": "t", "region": "in", "method": ["mae", "mae", "other", "other"],
                       "n_tiles": [1, 2, 1, 2], "rmse": [1.0, 0.9, 1.1, 1.0]})
    fig = plot_label_efficiency(df, "rmse", "t")
    lines = {line.get_label().split(" ")[0]: to_hex(line.get_color()) for line in fig.axes[0].lines}
    assert lines["mae"] == METHOD_COLORS["mae"].lower()
    assert lines["other"] in {c.lower() for c in OKABE_ITO}
    plt.close(fig)


def test_worldcover_keeps_its_official_colours():
    cmap, _ = worldcover_cmap()
    assert [to_hex(c) for c in cmap.colors] == [to_hex(c) for c in WORLDCOVER_COLORS]

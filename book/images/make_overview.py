"""Draw book/images/overview.png (README and book intro) from a simulated scene.

Run from the repository root: ``python book/images/make_overview.py``.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from sarssl.data.scene import simulate_scene
from sarssl.plots import show_worldcover

scene = simulate_scene(512, 512, seed=3)
summer_vv = scene.sigma0.sel(season="summer", pol="vv", **{"pass": "asc"})
rgb = np.stack([scene.sigma0.sel(season=s, pol="vv", **{"pass": "asc"}).values for s in ("winter", "spring", "summer")], -1)
rgb = np.clip((rgb + 22) / 20, 0, 1)
fig, axes = plt.subplots(1, 4, figsize=(16, 4.3))
show_worldcover(axes[0], scene.landcover.values)
axes[0].set_title("land cover (WorldCover classes)")
axes[1].imshow(summer_vv, cmap="gray", vmin=-22, vmax=-2)
axes[1].set_title("Sentinel-1 VV, summer median [dB]")
axes[2].imshow(np.nan_to_num(rgb))
axes[2].set_title("VV winter / spring / summer as RGB")
im = axes[3].imshow(scene.treecover, cmap="Greens", vmin=0, vmax=100)
axes[3].set_title("tree cover [%]")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("A simulated 5 km x 5 km region (sarssl.data.simulate)", y=0.98)
fig.tight_layout()
fig.savefig(Path(__file__).with_name("overview.png"), dpi=90)

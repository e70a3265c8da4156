"""SAR multi-crop augmentation for DINO on the 12 normalised input channels.

DINO (Caron et al. 2021) trains a student on many views of an image to match a teacher that sees
two large ("global") views. The RGB recipe (colour jitter, grayscale, solarise, blur) has no meaning
for radar, so each view here gets radar-appropriate perturbations instead:

- geometry: random resized crop (bilinear, antialiased; the validity mask with nearest), horizontal
  and vertical flips, 90-degree rotations, small rotations (reflection padding);
- radiometry, all additive in dB: a random calibration-like offset added to VV and VH (a common
  offset plus a small polarisation-differential one, VV-VH changes by exactly the differential),
  by default within Sentinel-1's absolute radiometric accuracy (+-0.5 dB common, +-0.25 dB
  differential): in SAR the level itself separates land-cover classes, so larger offsets teach the
  encoder to ignore the signal it is evaluated on,
  and fresh multiplicative speckle, Gamma(L, 1/L) in linear power, applied to VV and VH, with VV-VH
  recomputed from the speckled VV and VH;
- channel-group dropout: one whole season (its VV-VH, VV and VH) or one whole polarisation (VV with
  VV-VH, or VH with VV-VH) filled with 0 = the normalised mean, and marked invalid in the view's mask;
- optional season views: ``"single"`` replicates one randomly drawn season into all four season
  slots (the student must infer the annual representation the teacher sees from one season, a
  seasonal-contrast style invariance to phenology and acquisition date); ``"roll"`` cyclically
  shifts the season order (invariance to the season labelling, weaker physically, offered to
  compare).

**Normalisation (design choice).** The transform works on the dataset's *normalised* tensors
``x = (dB - mean_c) / std_c`` and needs only the per-channel ``std_c`` in dB: every radiometric
perturbation is an addition in dB (``10 log10(gamma)`` for speckle, an offset for calibration),
which in normalised units is ``delta_dB / std_c``. The mean cancels, so the views stay exactly
consistent with the normalisation the encoder sees, with no round trip through dB. No-data pixels
(``s1_valid`` False) are reset to 0 after the perturbations, as in the dataset contract.

Channels follow :data:`sarssl.data.products.INPUT_CHANNELS`: indices 0-3 VV-VH, 4-7 VV, 8-11 VH,
seasons winter, spring, summer, fall within each group.

Every random draw comes from a ``torch.Generator``; :class:`MultiCropDataset` seeds one per item
from ``(seed, epoch, index)`` so the crops do not depend on the number of DataLoader workers.
:class:`BatchMultiCrop` / :class:`BatchMultiCropDataset` make the same kinds of views for whole
batches on the training device in the main process (one generator per batch), which is what DINO
training uses by default (``DINOConfig.multicrop = "batch"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sarssl.data.products import INPUT_CHANNELS, SEASONS

N_CHANNELS = len(INPUT_CHANNELS)
N_SEASONS = len(SEASONS)
VVVH = slice(0, 4)
VV = slice(4, 8)
VH = slice(8, 12)

#: Channel groups that channel-group dropout removes whole: each season, and each polarisation
#: (a polarisation takes the VV-VH difference with it, since that channel depends on both).
CHANNEL_GROUPS: dict[str, tuple[int, ...]] = {
    **{s: (i, 4 + i, 8 + i) for i, s in enumerate(SEASONS)},
    "vv": (0, 1, 2, 3, 4, 5, 6, 7),
    "vh": (0, 1, 2, 3, 8, 9, 10, 11),
}

SEASON_MODES = ("none", "single", "roll")


@dataclass(frozen=True)
class ViewAugment:
    """Perturbations for one kind of view (global or local). Probabilities are per view."""

    hflip_p: float = 0.5
    vflip_p: float = 0.5
    rot90: bool = True  # a uniformly drawn multiple of 90 degrees
    rotate_deg: float = 10.0  # small rotation, uniform in [-rotate_deg, rotate_deg]
    rotate_p: float = 0.3
    intensity_p: float = 0.8
    # within Sentinel-1's absolute radiometric accuracy (about 0.5 dB): the level itself separates classes
    db_offset: float = 0.5  # common VV and VH offset, uniform in [-db_offset, db_offset] dB
    db_pol_offset: float = 0.25  # differential: VV gets +d/2, VH -d/2, d uniform in [-x, x] dB
    speckle_p: float = 0.5
    speckle_looks: float = 4.0  # equivalent number of looks L of the fresh speckle
    group_drop_p: float = 0.2  # drop one channel group (see CHANNEL_GROUPS)
    season_mode: str = "none"  # "none", "single" or "roll"
    season_p: float = 0.0

    def __post_init__(self):
        for name in ("hflip_p", "vflip_p", "rotate_p", "intensity_p", "speckle_p", "group_drop_p", "season_p"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"ViewAugment.{name}={v}: expected a probability in [0, 1]")
        if self.season_mode not in SEASON_MODES:
            raise ValueError(f"ViewAugment.season_mode={self.season_mode!r}: expected one of {SEASON_MODES}")
        if self.speckle_looks <= 0:
            raise ValueError(f"ViewAugment.speckle_looks={self.speckle_looks}: expected > 0")
        if self.rotate_deg < 0 or self.db_offset < 0 or self.db_pol_offset < 0:
            raise ValueError("ViewAugment: rotate_deg, db_offset and db_pol_offset must be >= 0")

    @property
    def needs_std(self) -> bool:
        return (self.intensity_p > 0 and (self.db_offset > 0 or self.db_pol_offset > 0)) or self.speckle_p > 0


@dataclass(frozen=True)
class MultiCropConfig:
    """Crop counts, sizes (pixels) and area scales (fraction of the chip) for global and local views."""

    n_global: int = 2
    n_local: int = 6
    global_size: int = 64
    local_size: int = 32
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    global_aug: ViewAugment = field(default_factory=ViewAugment)
    local_aug: ViewAugment = field(default_factory=ViewAugment)

    def __post_init__(self):
        if self.n_global < 1 or self.n_local < 0:
            raise ValueError(f"MultiCropConfig: n_global={self.n_global} (>= 1) n_local={self.n_local} (>= 0)")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"MultiCropConfig.{name}={(lo, hi)}: expected 0 < min <= max <= 1")
        if self.global_size < 1 or self.local_size < 1:
            raise ValueError("MultiCropConfig: crop sizes must be positive")

    @property
    def n_crops(self) -> int:
        return self.n_global + self.n_local


# ------------------------------------------------------------------------------------------------
# random draws
# ------------------------------------------------------------------------------------------------
def _u(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def sample_gamma(shape: Sequence[int], looks: float, generator: torch.Generator | None = None,
                 dtype=torch.float32) -> torch.Tensor:
    """Gamma(looks, scale=1/looks) samples (mean 1, variance 1/looks): multiplicative speckle.

    Marsaglia-Tsang (2000) squeeze/rejection, vectorised and driven by ``generator`` (torch's own
    Gamma sampler takes no generator); shape ``< 1`` uses the boost ``G(a) = G(a+1) U^(1/a)``.
    """
    a = float(looks)
    if a <= 0:
        raise ValueError(f"sample_gamma: looks={looks}, expected > 0")
    boost = a < 1.0
    a_eff = a + 1.0 if boost else a
    d = a_eff - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    n = int(np.prod(shape))
    out = torch.empty(n, dtype=torch.float64)
    todo = torch.arange(n)
    while todo.numel():
        m = todo.numel()
        x = torch.randn(m, generator=generator, dtype=torch.float64)
        u = torch.rand(m, generator=generator, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        ok = v > 0
        lv = torch.log(v.clamp_min(1e-300))
        ok &= torch.log(u.clamp_min(1e-300)) < 0.5 * x * x + d - d * v + d * lv
        out[todo[ok]] = d * v[ok]
        todo = todo[~ok]
    if boost:
        u = torch.rand(n, generator=generator, dtype=torch.float64).clamp_min(1e-300)
        out = out * u ** (1.0 / a)
    return (out / a).reshape(tuple(shape)).to(dtype)


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------
def sample_crop_box(h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
                    g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random resized crop (area fraction ``scale``, aspect ``ratio``)."""
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _u(g, *scale)
        ar = math.exp(_u(g, *log_r))
        cw = int(round(math.sqrt(target * ar)))
        ch = int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            return top, left, ch, cw
    # fallback: the largest centred crop within the ratio bounds
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def resized_crop(x: torch.Tensor, valid: torch.Tensor, box: tuple[int, int, int, int],
                 size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``box`` of (C, H, W) ``x`` (bilinear, antialiased) and ``valid`` (nearest) to ``size`` x ``size``."""
    top, left, ch, cw = box
    xc = x[None, :, top:top + ch, left:left + cw]
    vc = valid[None, :, top:top + ch, left:left + cw]
    if (ch, cw) != (size, size):
        xc = F.interpolate(xc, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        vc = F.interpolate(vc.to(torch.uint8), size=(size, size), mode="nearest-exact").bool()
    return xc[0], vc[0]


def rotate_small(x: torch.Tensor, valid: torch.Tensor, degrees: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate (C, S, S) ``x`` (bilinear) and ``valid`` (nearest) by ``degrees`` about the centre, reflection padding."""
    t = math.radians(degrees)
    theta = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]],
                         dtype=x.dtype)[None]
    grid = F.affine_grid(theta, [1, *x.shape], align_corners=False)
    xr = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
    vr = F.grid_sample(valid[None].to(x.dtype), grid, mode="nearest", padding_mode="reflection",
                       align_corners=False)[0] > 0.5
    return xr, vr


# ------------------------------------------------------------------------------------------------
# radiometry and channel operations on normalised tensors
# ------------------------------------------------------------------------------------------------
def add_db_offset(x: torch.Tensor, std_db: torch.Tensor, vv_db: float, vh_db: float) -> torch.Tensor:
    """Add ``vv_db`` to the VV channels and ``vh_db`` to VH (VV-VH gets ``vv_db - vh_db``); normalised units."""
    delta = torch.empty(N_CHANNELS, dtype=x.dtype)
    delta[VVVH] = vv_db - vh_db
    delta[VV] = vv_db
    delta[VH] = vh_db
    return x + (delta / std_db.to(x.dtype))[:, None, None]


def add_speckle(x: torch.Tensor, std_db: torch.Tensor, looks: float, g: torch.Generator) -> torch.Tensor:
    """Fresh multiplicative Gamma(L, 1/L) speckle on VV and VH in linear power; VV-VH recomputed.

    In dB the speckle is additive, ``10 log10(n)``, so on normalised channels it adds
    ``10 log10(n) / std_c``; the VV-VH channels get the speckled difference ``n_dB(VV) - n_dB(VH)``.
    """
    _, h, w = x.shape
    n_db = 10.0 * torch.log10(sample_gamma((8, h, w), looks, g, dtype=x.dtype))  # VV seasons, VH seasons
    std = std_db.to(x.dtype)[:, None, None]
    out = x.clone()
    out[VV] += n_db[:4] / std[VV]
    out[VH] += n_db[4:] / std[VH]
    out[VVVH] += (n_db[:4] - n_db[4:]) / std[VVVH]
    return out


def season_index(mode: str, g: torch.Generator) -> torch.Tensor:
    """Source season for each of the 4 season slots: ``"single"`` one season 4 times, ``"roll"`` a shift by 1-3."""
    if mode == "single":
        s = int(torch.randint(0, N_SEASONS, (), generator=g))
        return torch.full((N_SEASONS,), s, dtype=torch.long)
    if mode == "roll":
        k = int(torch.randint(1, N_SEASONS, (), generator=g))
        return (torch.arange(N_SEASONS) + k) % N_SEASONS
    raise ValueError(f"season_index: mode={mode!r}, expected 'single' or 'roll'")


def remap_seasons(x: torch.Tensor, valid: torch.Tensor, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot ``j`` of every channel group shows season ``src[j]`` (channel index map, no copies per pixel loop)."""
    idx = torch.cat([q * N_SEASONS + src for q in range(3)])
    return x[idx], valid[idx]


def drop_channel_group(x: torch.Tensor, valid: torch.Tensor, group: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the channels of ``group`` (a key of :data:`CHANNEL_GROUPS`) with 0 and mark them invalid."""
    if group not in CHANNEL_GROUPS:
        raise ValueError(f"drop_channel_group: group={group!r}, expected one of {tuple(CHANNEL_GROUPS)}")
    idx = list(CHANNEL_GROUPS[group])
    x = x.clone()
    valid = valid.clone()
    x[idx] = 0.0
    valid[idx] = False
    return x, valid


# ------------------------------------------------------------------------------------------------
# the multi-crop transform
# ------------------------------------------------------------------------------------------------
class MultiCrop:
    """Make ``n_global`` global and ``n_local`` local augmented views of one chip.

    ``std_db``: per-channel standard deviation in dB used by the dataset's normalisation (12 values
    in ``INPUT_CHANNELS`` order); needed only when intensity offsets or speckle are enabled.
    Call with ``(s1 (12, H, W) float, s1_valid (12, H, W) bool, generator)``; returns
    ``(crops, valids)``: lists of ``n_crops`` tensors, globals first, (12, S, S) float32 / bool.
    """

    def __init__(self, config: MultiCropConfig | None = None, std_db: Sequence[float] | torch.Tensor | None = None):
        self.config = config or MultiCropConfig()
        if std_db is None:
            if self.config.global_aug.needs_std or (self.config.n_local and self.config.local_aug.needs_std):
                raise ValueError(
                    "MultiCrop: std_db (per-channel normalisation std in dB, 12 values in INPUT_CHANNELS "
                    "order) is required when intensity offsets or speckle are enabled")
            self.std_db = None
        else:
            std = torch.as_tensor(np.asarray(std_db, dtype=np.float32))
            if std.shape != (N_CHANNELS,) or not bool(torch.all(std > 0)):
                raise ValueError(f"MultiCrop: std_db must be {N_CHANNELS} positive values, got {tuple(std.shape)} {std}")
            self.std_db = std

    @classmethod
    def from_normalization(cls, config: MultiCropConfig | None, norm) -> "MultiCrop":
        """Build from a :class:`sarssl.data.transforms.Normalization` (its ``std`` in dB, channels checked)."""
        if tuple(norm.channels) != INPUT_CHANNELS:
            raise ValueError(f"MultiCrop: normalisation channels {list(norm.channels)} are not INPUT_CHANNELS "
                             f"{list(INPUT_CHANNELS)}")
        return cls(config, std_db=norm.std)

    def view(self, x: torch.Tensor, valid: torch.Tensor, size: int, scale: tuple[float, float],
             aug: ViewAugment, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented (12, size, size) view and its validity mask."""
        cfg = self.config
        box = sample_crop_box(x.shape[-2], x.shape[-1], scale, cfg.ratio, g)
        xv, vv = resized_crop(x, valid, box, size)
        if _u(g) < aug.hflip_p:
            xv, vv = xv.flip(-1), vv.flip(-1)
        if _u(g) < aug.vflip_p:
            xv, vv = xv.flip(-2), vv.flip(-2)
        if aug.rot90:
            k = int(torch.randint(0, 4, (), generator=g))
            if k:
                xv, vv = torch.rot90(xv, k, (-2, -1)), torch.rot90(vv, k, (-2, -1))
        if aug.rotate_deg > 0 and _u(g) < aug.rotate_p:
            xv, vv = rotate_small(xv, vv, _u(g, -aug.rotate_deg, aug.rotate_deg))
        if aug.season_mode != "none" and _u(g) < aug.season_p:
            xv, vv = remap_seasons(xv, vv, season_index(aug.season_mode, g))
        if aug.intensity_p > 0 and _u(g) < aug.intensity_p:
            common = _u(g, -aug.db_offset, aug.db_offset)
            diff = _u(g, -aug.db_pol_offset, aug.db_pol_offset)
            xv = add_db_offset(xv, self.std_db, common + diff / 2, common - diff / 2)
        if aug.speckle_p > 0 and _u(g) < aug.speckle_p:
            xv = add_speckle(xv, self.std_db, aug.speckle_looks, g)
        if aug.group_drop_p > 0 and _u(g) < aug.group_drop_p:
            names = tuple(CHANNEL_GROUPS)
            xv, vv = drop_channel_group(xv, vv, names[int(torch.randint(0, len(names), (), generator=g))])
        xv = torch.where(vv, xv, torch.zeros((), dtype=xv.dtype))
        return xv.contiguous(), vv.contiguous()

    def _checked(self, s1, s1_valid, batched: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``s1`` as float32 and its bool mask (all valid when None), checked: (12, H, W) per chip, or
        (B, 12, H, W) when ``batched``."""
        who, want = (("BatchMultiCrop", f"(B, {N_CHANNELS}, H, W)") if batched
                     else ("MultiCrop", f"({N_CHANNELS}, H, W) in INPUT_CHANNELS order"))
        s1 = torch.as_tensor(s1, dtype=torch.float32)
        if s1.ndim != 3 + batched or s1.shape[-3] != N_CHANNELS:
            raise ValueError(f"{who}: 's1' must be {want}, got {tuple(s1.shape)}")
        valid = torch.ones_like(s1, dtype=torch.bool) if s1_valid is None else torch.as_tensor(s1_valid).bool()
        if valid.shape != s1.shape:
            raise ValueError(f"{who}: 's1_valid' shape {tuple(valid.shape)} != 's1' shape {tuple(s1.shape)}")
        return s1, valid

    def _views(self, make_view, s1: torch.Tensor, valid: torch.Tensor, generator: torch.Generator | None):
        """``make_view(s1, valid, size, scale, aug, g)`` for each of the ``n_crops`` views, globals first."""
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        cfg = self.config
        crops, valids = [], []
        for i in range(cfg.n_crops):
            is_global = i < cfg.n_global
            xv, vv = make_view(s1, valid, cfg.global_size if is_global else cfg.local_size,
                               cfg.global_scale if is_global else cfg.local_scale,
                               cfg.global_aug if is_global else cfg.local_aug, g)
            crops.append(xv)
            valids.append(vv)
        return crops, valids

    def __call__(self, s1: torch.Tensor, s1_valid: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self._views(self.view, *self._checked(s1, s1_valid, batched=False), generator)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for item ``index`` of epoch ``epoch`` (independent of worker layout)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class MultiCropDataset(torch.utils.data.Dataset):
    """Wrap a dataset of canonical sample dicts; each item becomes ``{"crops": [...], "crops_valid": [...]}``.

    The crops of item ``i`` in epoch ``e`` depend only on ``(seed, e, i)``; call :meth:`set_epoch`
    before each epoch (the DINO task does it from its epoch hook). ``keep`` names sample keys
    copied through (e.g. ``"id"``, ``"worldcover"``). The default collate turns the lists into
    lists of (B, 12, S, S) batches.
    """

    def __init__(self, base, multicrop: MultiCrop, seed: int = 0, keep: Sequence[str] = ("id",)):
        self.base = base
        self.multicrop = multicrop
        self.seed = int(seed)
        self.keep = tuple(keep)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        sample = self.base[index]
        if "s1" not in sample:
            raise KeyError(f"MultiCropDataset: item {index} has no 's1' (keys: {sorted(sample)})")
        g = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
        crops, valids = self.multicrop(sample["s1"], sample.get("s1_valid"), g)
        out = {"crops": crops, "crops_valid": valids}
        for k in self.keep:
            if k in sample:
                out[k] = sample[k]
        return out


# ------------------------------------------------------------------------------------------------
# batched multi-crop: whole batches on the training device, in the main process
# ------------------------------------------------------------------------------------------------
def _view_theta(box: tuple[int, int, int, int], h: int, w: int, hflip: bool, vflip: bool, k: int,
                degrees: float) -> torch.Tensor:
    """(2, 3) ``affine_grid`` matrix (``align_corners=False``) of one view: output coordinates are turned
    (small rotation, ``k`` quarter turns, flips) and then mapped into the crop ``box`` of an ``h x w`` chip."""
    top, left, ch, cw = box
    a = torch.eye(2, dtype=torch.float64)
    if degrees:
        t = math.radians(degrees)
        a = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=torch.float64) @ a
    # a quarter turn of the output samples (x, y) at (-y, x): torch.rot90(view, k, (-2, -1)) exactly
    q = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    a = torch.linalg.matrix_power(q, k % 4) @ a
    if vflip:
        a = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)) @ a
    if hflip:
        a = torch.diag(torch.tensor([-1.0, 1.0], dtype=torch.float64)) @ a
    scale = torch.diag(torch.tensor([cw / w, ch / h], dtype=torch.float64))
    centre = torch.tensor([(2 * left + cw) / w - 1.0, (2 * top + ch) / h - 1.0], dtype=torch.float64)
    return torch.cat([scale @ a, centre[:, None]], 1)


class BatchMultiCrop(MultiCrop):
    """:class:`MultiCrop` for whole batches: ``(B, 12, H, W)`` in, lists of ``(B, 12, S, S)`` views out.

    The same perturbations as :meth:`MultiCrop.view` (geometry, level offsets, speckle, season
    remapping, channel-group dropout), drawn per image, but applied as a few tensor operations per
    view: crop, resize, flips, quarter turns and the small rotation are one affine ``grid_sample``
    (bilinear for ``s1``, nearest for the mask; outside the chip the border is reflected), the level
    offsets one broadcast add, speckle one Gamma draw for the views that get it. It runs where the
    batch is (the training device, in the main process), so the DataLoader workers only read chips.

    Differences from the per-sample path, by design: resizing is bilinear without antialiasing
    (global crops are enlarged, local crops shrink by at most ``sqrt(max local scale) x chip / local
    size``, 1.26 x for 64 px chips and 32 px views), and a small rotation samples the chip around
    the crop rather than reflecting the crop's own border. Scalar draws come from one
    ``torch.Generator`` per batch (see :meth:`MultiCropDataset.batch_views`).
    """

    def _params(self, n: int, h: int, w: int, size: int, scale, aug: ViewAugment, g: torch.Generator):
        thetas, seasons, offsets, speckle, drops = [], [], [], [], []
        names = tuple(CHANNEL_GROUPS)
        for _ in range(n):
            box = sample_crop_box(h, w, scale, self.config.ratio, g)
            hf, vf = _u(g) < aug.hflip_p, _u(g) < aug.vflip_p
            k = int(torch.randint(0, 4, (), generator=g)) if aug.rot90 else 0
            deg = _u(g, -aug.rotate_deg, aug.rotate_deg) if aug.rotate_deg > 0 and _u(g) < aug.rotate_p else 0.0
            thetas.append(_view_theta(box, h, w, hf, vf, k, deg))
            src = (season_index(aug.season_mode, g) if aug.season_mode != "none" and _u(g) < aug.season_p
                   else torch.arange(N_SEASONS))
            seasons.append(torch.cat([q * N_SEASONS + src for q in range(3)]))
            if aug.intensity_p > 0 and _u(g) < aug.intensity_p:
                common = _u(g, -aug.db_offset, aug.db_offset)
                diff = _u(g, -aug.db_pol_offset, aug.db_pol_offset)
                offsets.append((common + diff / 2, common - diff / 2))
            else:
                offsets.append((0.0, 0.0))
            speckle.append(aug.speckle_p > 0 and _u(g) < aug.speckle_p)
            drops.append(names[int(torch.randint(0, len(names), (), generator=g))]
                         if aug.group_drop_p > 0 and _u(g) < aug.group_drop_p else None)
        return torch.stack(thetas), torch.stack(seasons), offsets, torch.tensor(speckle), drops

    def batch_view(self, x: torch.Tensor, valid: torch.Tensor, size: int, scale, aug: ViewAugment,
                   g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented view of every image of (B, 12, H, W) ``x``: ``(B, 12, size, size)`` and its mask."""
        b, c, h, w = x.shape
        theta, season, offsets, speckle, drops = self._params(b, h, w, size, scale, aug, g)
        grid = F.affine_grid(theta.to(x.dtype).to(x.device), [b, c, size, size], align_corners=False)
        xv = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        vv = F.grid_sample(valid.to(x.dtype), grid, mode="nearest", padding_mode="reflection",
                           align_corners=False) > 0.5
        idx = season.to(x.device)[:, :, None, None].expand(-1, -1, size, size)
        xv, vv = xv.gather(1, idx), vv.gather(1, idx)
        if self.std_db is not None:
            std = self.std_db.to(device=x.device, dtype=x.dtype)
            vvdb = torch.tensor([o[0] for o in offsets], dtype=x.dtype)
            vhdb = torch.tensor([o[1] for o in offsets], dtype=x.dtype)
            delta = torch.cat([(vvdb - vhdb)[:, None].expand(-1, 4), vvdb[:, None].expand(-1, 4),
                               vhdb[:, None].expand(-1, 4)], 1).to(x.device)
            xv = xv + (delta / std)[:, :, None, None]
            sel = torch.nonzero(speckle).flatten()
            if sel.numel():
                n_db = 10.0 * torch.log10(sample_gamma((sel.numel(), 8, size, size), aug.speckle_looks, g,
                                                       dtype=x.dtype)).to(x.device)
                s = std[None, :, None, None]
                add = torch.cat([n_db[:, :4] - n_db[:, 4:], n_db[:, :4], n_db[:, 4:]], 1) / s
                xv = xv.index_add(0, sel.to(x.device), add)
        keep = torch.ones(b, c, dtype=torch.bool)
        for i, name in enumerate(drops):
            if name is not None:
                keep[i, list(CHANNEL_GROUPS[name])] = False
        vv = vv & keep.to(x.device)[:, :, None, None]
        xv = torch.where(vv, xv, torch.zeros((), dtype=xv.dtype, device=xv.device))
        return xv.contiguous(), vv.contiguous()

    def batch(self, s1: torch.Tensor, s1_valid: torch.Tensor | None = None, generator: torch.Generator | None = None
              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``n_crops`` views of every image of (B, 12, H, W) ``s1``: lists of (B, 12, S, S) tensors, globals first."""
        return self._views(self.batch_view, *self._checked(s1, s1_valid, batched=True), generator)


class BatchMultiCropDataset(MultiCropDataset):
    """:class:`MultiCropDataset` whose items stay whole chips (``s1``, ``s1_valid``, ``index``); the engine's
    ``batch_transform`` :meth:`batch_views` makes the views of each batch on the device in the main process.

    A batch's draws come from one generator seeded by ``(seed, epoch, its item indices)``, so they repeat
    exactly on a resumed run (the sampler replays the same batches) and do not depend on the workers.
    """

    def __init__(self, base, multicrop: BatchMultiCrop, seed: int = 0, keep: Sequence[str] = ("id",)):
        if not isinstance(multicrop, BatchMultiCrop):
            raise TypeError(f"BatchMultiCropDataset: expected a BatchMultiCrop, got {type(multicrop).__name__}")
        super().__init__(base, multicrop, seed, keep)

    def __getitem__(self, index: int) -> dict:
        sample = self.base[index]
        if "s1" not in sample:
            raise KeyError(f"BatchMultiCropDataset: item {index} has no 's1' (keys: {sorted(sample)})")
        out = {"s1": torch.as_tensor(sample["s1"], dtype=torch.float32), "index": int(index)}
        if sample.get("s1_valid") is not None:
            out["s1_valid"] = torch.as_tensor(sample["s1_valid"]).bool()
        for k in self.keep:
            if k in sample:
                out[k] = sample[k]
        return out

    def batch_views(self, batch: dict) -> dict:
        """``batch`` (collated items) with ``crops``/``crops_valid`` added: the engine's ``batch_transform``."""
        index = torch.as_tensor(batch["index"]).flatten().tolist()
        seq = np.random.SeedSequence([self.seed, self.epoch, *[int(i) for i in index]])
        g = torch.Generator().manual_seed(int(seq.generate_state(2, np.uint64)[0] >> np.uint64(1)))
        crops, valids = self.multicrop.batch(batch["s1"], batch.get("s1_valid"), g)
        out = {k: v for k, v in batch.items() if k not in ("s1", "s1_valid")}
        out["crops"], out["crops_valid"] = crops, valids
        return out

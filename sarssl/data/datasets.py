"""The torch ``Dataset`` over M3LEO AOIs: validated chips, label fractions, normalised 12-channel input.

Each item is the canonical sample dict (see ``M3LEODataset``). Chips are validated eagerly at
construction (header reads of every product, a pixel read of S1 only): a corrupt file, a wrong
band count or dtype, a footprint that does not cover the chip, an all-no-data S1 chip, a chip whose
input channels are all no-data (the S1 bands they use hold no valid pixel: descending-only coverage),
a chip of another size than the AOI's other chips, or a chip missing from one product is skipped with
a ``warnings.warn`` naming the file and counted in ``dataset.skipped``. A file that passes the header
check but fails to decode later raises a ``UserError`` (a ``ValueError``) naming it in ``__getitem__`` (never a silent
constant).

Derived files are keyed by the data's content, not only its folder: the packed cache
(:func:`sarssl.data.cache.cache_key`) and the normalisation JSON (:func:`normalization_key`: besides the
root and the fit's settings, the split file, the sizes and mtimes of the train chips' S1 files and the
decoder version), so a chip rewritten in place or a region re-simulated with another seed is never served
from an old cache.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sarssl import paths
from sarssl.data import cache as cache_mod
from sarssl.data.fingerprint import DECODER_VERSION, chip_files_digest, split_digest
from sarssl.data.layout import SPLITS, AOILayout, check_unique_aois, parse_splits
from sarssl.data.m3leo import (
    ALL_PRODUCTS,
    GDAL_READ_OPTIONS,
    ChipGrid,
    available_products,
    chip_reading,
    channel_specs,
    check_header,
    label_fraction_ids,
    nearest_index,
    read_record,
    read_splits,
    reference_product,
)
from sarssl.data.products import (
    INPUT_CHANNELS,
    S1_DB_MIN,
    S1_DB_RANGE,
    decode_lcci,
    decode_modis_treecover,
    decode_s1,
    decode_worldcover,
    GHS_NODATA,
    product_family,
)
from sarssl.data.transforms import Normalization, fit_normalization, load_or_fit, norm_key_hash
from sarssl.errors import UserError

__all__ = ["M3LEODataset", "validate_chips", "record_to_sample", "decode_record", "default_cache_root", "SKIP_REASONS",
           "normalization_key"]

#: why a chip is skipped (``dataset.skipped`` keys); ``input_nodata``: every input channel is no-data
#: (the S1 bands the channels use hold no valid pixel), ``shape``: another size than the AOI's chips
SKIP_REASONS = ("missing", "corrupt", "band_count", "dtype", "footprint", "all_nodata", "input_nodata", "read_error",
                "shape")

_CODES = np.arange(256, dtype=np.uint8)
_WC_LUT = torch.from_numpy(decode_worldcover(_CODES))
_LCCI_LUT = torch.from_numpy(decode_lcci(_CODES))
_MODIS = decode_modis_treecover(_CODES)
_MODIS_LUT = torch.from_numpy(np.nan_to_num(_MODIS, nan=0.0))
_MODIS_OK = torch.from_numpy(np.isfinite(_MODIS))


def default_cache_root() -> Path:
    """The sarssl workspace root (``$SARSSL_HOME`` or ``~/.cache/sarssl``), see :mod:`sarssl.paths`."""
    return paths.workspace_dir()


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def validate_chips(layout: AOILayout, products, ids, progress: bool = True, on_bad: str = "skip",
                   details: dict | None = None, warn: bool = True, channels=INPUT_CHANNELS,
                   shapes: dict | None = None):
    """Cheap validation of chips: returns ``(good_ids, skipped)`` with ``skipped`` reason -> ids.

    Per chip and product: the file exists (``missing``), opens (``corrupt``), has the expected band
    count (``band_count``) and dtype (``dtype``), its footprint covers the chip grid of the reference
    product (``footprint``); S1 pixels are read: a chip with no valid S1 pixel is ``all_nodata``, one
    where none of ``channels`` has a valid pixel (the S1 bands they use are empty, e.g. descending-only
    coverage for the ascending input channels) is ``input_nodata``. Then the chips' size (the reference
    product's height and width): the size most chips share is the AOI's, a chip of another size is
    ``shape``. Each bad chip is reported once with ``warnings.warn`` naming the file
    (``on_bad="raise"`` raises); ``details`` (when given) receives id -> message, ``shapes`` id -> (H, W)
    of the chips kept.
    """
    import rasterio

    ref = reference_product(products)
    order = [ref] + [p for p in products if p != ref]
    pairs = sorted({(a, b) for _, a, b in channel_specs(channels)})
    good, skipped, sizes = [], {}, {}
    with rasterio.Env(**GDAL_READ_OPTIONS):
        _validate_loop(layout, order, ids, progress, on_bad, details, warn, good, skipped, pairs, sizes)
    if good:
        from collections import Counter

        size = Counter(sizes[i] for i in good).most_common(1)[0][0]
        odd = [i for i in good if sizes[i] != size]
        for ident in odd:
            h, w = sizes[ident]
            path = layout.chip_path(ref, ident)
            _report_bad(layout, ident, "shape", f"{str(path)!r}: the chip is {h}x{w} px, the AOI's other chips "
                        f"are {size[0]}x{size[1]} px", on_bad, details, warn, skipped)
        if odd:
            good[:] = [i for i in good if sizes[i] == size]
    if shapes is not None:
        shapes.update({i: sizes[i] for i in good})
    return good, skipped


def _report_bad(layout, ident, reason, detail, on_bad, details, warn, skipped, stacklevel=3):
    msg = f"M3LEO: skipping chip {ident!r} of AOI {layout.aoi!r} ({reason}): {detail}"
    if on_bad == "raise":
        raise UserError(msg)
    if warn:
        warnings.warn(msg, stacklevel=stacklevel)
    if details is not None:
        details[ident] = msg
    skipped.setdefault(reason, []).append(ident)


def _validate_loop(layout, order, ids, progress, on_bad, details, warn, good, skipped, pairs, sizes):
    import rasterio
    from rasterio.errors import RasterioError
    from tqdm.auto import tqdm

    for ident in tqdm(list(ids), desc=f"validating {layout.aoi}", disable=not progress, leave=False):
        reason = None
        grid = None
        for product in order:
            path = layout.chip_path(product, ident)
            if not path.is_file():
                reason, detail = "missing", f"chip missing from product {product!r}: {str(path)!r} does not exist"
                break
            try:
                with rasterio.open(path) as src:
                    bad = check_header(src, product)
                    if bad:
                        reason, detail = bad.split(":")[0], f"{str(path)!r}: {bad}"
                        break
                    sgrid = ChipGrid.from_src(src)
                    if grid is None:
                        grid = sgrid
                    else:
                        nearest_index(sgrid, grid, what=str(path))
                    if product_family(product) == "s1grd":
                        data = src.read()
                        if not data.any():
                            reason, detail = "all_nodata", f"{str(path)!r}: every S1 pixel is no-data (0)"
                            break
                        if not any(((data[a] != 0) & (data[b] != 0)).any() for a, b in pairs):
                            reason, detail = "input_nodata", (
                                f"{str(path)!r}: none of the input channels has a valid pixel (the S1 bands they "
                                "use are all no-data, e.g. descending-only coverage of ascending channels)")
                            break
            except ValueError as e:
                reason, detail = "footprint", str(e)
                break
            except (RasterioError, OSError) as e:
                reason, detail = "corrupt", f"{str(path)!r} cannot be read as a GeoTIFF: {e}"
                break
        if reason is None:
            good.append(ident)
            sizes[ident] = (grid.height, grid.width)
            continue
        _report_bad(layout, ident, reason, detail, on_bad, details, warn, skipped, stacklevel=4)


# --------------------------------------------------------------------------------------------
# Records -> tensors
# --------------------------------------------------------------------------------------------
def record_to_sample(rec: dict[str, np.ndarray], specs, norm: Normalization | None) -> dict[str, torch.Tensor]:
    """Compact record (see ``m3leo.read_record``) -> canonical sample tensors (without ``id``/``aoi``).

    ``specs`` are :func:`sarssl.data.m3leo.channel_specs` of the input channels; ``norm`` may be None
    (then ``s1`` is dB with no-data 0).
    """
    return decode_record(_record_tensors(rec), specs, norm)


def _record_tensors(rec: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A compact record's arrays as tensors (no copy unless an array is not contiguous)."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rec.items()}


def decode_record(rec: dict[str, torch.Tensor], specs, norm: Normalization | None) -> dict[str, torch.Tensor]:
    """Compact record tensors (any leading batch dims, any device) -> canonical sample tensors there.

    The same decoding as :func:`record_to_sample`, so a batch of compact records (see
    ``M3LEODataset(decode="batch")``) can be decoded after it reached the GPU.
    """
    out: dict[str, torch.Tensor] = {}
    dev = next(iter(rec.values())).device
    if "s1" in rec:
        out["s1"], out["s1_valid"] = _s1_channels_normalised(rec["s1"], specs, norm)
    if "worldcover" in rec:
        out["worldcover"] = _WC_LUT.to(dev)[rec["worldcover"].long()]
    if "lcci" in rec:
        out["lcci"] = _LCCI_LUT.to(dev)[rec["lcci"].long()]
    if "treecover" in rec:
        c = rec["treecover"].long()
        out["treecover"] = _MODIS_LUT.to(dev)[c]
        out["treecover_valid"] = _MODIS_OK.to(dev)[c]
    if "biomass" in rec:
        t = rec["biomass"]
        ok = torch.isfinite(t) & (t >= 0)
        out["biomass"] = torch.where(ok, t, 0.0).float()
        out["biomass_valid"] = ok
    if "built" in rec:
        c = rec["built"].to(torch.int32)
        ok = c != GHS_NODATA
        out["built"] = torch.where(ok, (c.float() / 100.0).clamp(0, 1), 0.0)
        out["built_valid"] = ok
    if "s2rgb" in rec:
        t = rec["s2rgb"]
        ok = t[..., 3, :, :] > 0
        out["s2rgb"] = torch.where(ok.unsqueeze(-3), t[..., :3, :, :].float() / 255.0, 0.0)
        out["s2rgb_valid"] = ok
    return out


def _s1_channels_normalised(codes: torch.Tensor, specs, norm: Normalization | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 16, H, W) uint8 codes -> ((..., C, H, W) float32 normalised channels with no-data 0, bool valid).

    Affine in the codes: dB = v*k + b, so VV-VH = (va - vb)*k and the normalised value is
    ``va*alpha + vb*beta + gamma`` per channel, computed in place in float32.
    """
    k = np.float32(S1_DB_RANGE / 255.0)
    ia = [a for _, a, _ in specs]
    ib = [b for _, _, b in specs]
    diff = np.array([q == "vv-vh" for q, _, _ in specs])
    mean = norm.mean.astype(np.float32) if norm is not None else np.zeros(len(specs), np.float32)
    inv = (1.0 / norm.std).astype(np.float32) if norm is not None else np.ones(len(specs), np.float32)
    offset = np.where(diff, 0.0, S1_DB_MIN).astype(np.float32)
    coef = np.stack([k * inv, np.where(diff, -k * inv, 0.0), (offset - mean) * inv]).astype(np.float32)
    alpha, beta, gamma = torch.from_numpy(coef).to(codes.device)[:, :, None, None]
    ca, cb = codes[..., ia, :, :], codes[..., ib, :, :]
    valid = (ca != 0) & (cb != 0)
    x = ca.float()
    x *= alpha
    if diff.any():
        x += cb * beta  # beta is 0 for single-polarisation channels
    x += gamma
    x *= valid
    return x, valid


def _s1_channels_db(rec, specs) -> np.ndarray:
    """Compact record -> (C, H, W) float64 dB with NaN no-data (for fitting normalisation)."""
    db = decode_s1(rec["s1"])
    return np.stack([db[a] - db[b] if q == "vv-vh" else db[a] for q, a, b in specs])


def normalization_key(layouts, product: str, channels, norm_tiles: int, seed: int, train_ids=None) -> dict:
    """The key a fitted normalisation is cached under: what it was fitted on, by content.

    ``layouts``: AOI -> :class:`~sarssl.data.layout.AOILayout` (or ``(root, aois)``). The key holds the data
    root, the AOIs, the product, the channels, the tile count and the seed, the decoder version and per AOI
    the split file's digest and the sizes and mtimes of the S1 files of its train chips (``train_ids``:
    AOI -> ids, default the split file's train chips): a chip rewritten in place or a region re-simulated
    with another seed gets new statistics.
    """
    if isinstance(layouts, tuple):
        root, aois = layouts
        aois = [aois] if isinstance(aois, str) else list(aois)
        layouts = {a: AOILayout.find(root, a) for a in aois}
    roots = {str(Path(lay.root).resolve()) for lay in layouts.values()}
    data = {}
    for aoi in sorted(layouts):
        layout = layouts[aoi]
        if train_ids is not None:
            ids = train_ids[aoi]
        else:
            df = read_splits(layout)
            ids = df.loc[df["split"] == "train", "identifier"].tolist()
        data[aoi] = {"split": split_digest(layout), "chips": chip_files_digest(layout, [product], ids)}
    return {"root": roots.pop() if len(roots) == 1 else sorted(roots), "aois": sorted(layouts), "product": product, "channels": list(channels), "norm_tiles": int(norm_tiles),
            "seed": int(seed), "decoder": DECODER_VERSION, "data": data}


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------
class M3LEODataset(Dataset):
    """Chips of one or more M3LEO AOIs as canonical sample dicts.

    Args:
        root: folder holding the AOI folders.
        aois: AOI name or list of names.
        split: ``"train"``, ``"val"``, ``"test"``, a list of them, or ``None`` for all chips.
        products: products to read; the S1 product (``s1grd-<year>``) gives the chip grid and the
            ``s1`` input; each label product adds its key (worldcover, lcci, treecover, biomass,
            built, s2rgb).
        limit_pct: percent of the (valid) selected chips kept, deterministic by ``seed``; nested.
        seed: seed of the label fraction and of the normalisation tile sample.
        normalization: ``"fit"`` (fit on ``norm_tiles`` train chips of ``aois``, cached as JSON under
            :func:`sarssl.paths.norm_dir` (``cache_dir/norm``, else ``<workspace>/norm``) and reused), a
            path to a JSON file (loaded when it exists, else fitted and written there), a
            :class:`Normalization`, or ``None``.
        channels: input channel names (default ``INPUT_CHANNELS``).
        cache_dir: when given, chips are read from a packed cache under it, built on first use
            (all chips of each AOI, so train/val/test datasets share it).
        on_bad: ``"skip"`` (warn and count) or ``"raise"``.
        decode: ``"sample"`` (items are decoded samples) or ``"batch"`` (items carry the compact
            uint8/uint16 record under ``"record"``, ~4x fewer bytes between worker processes; decode
            a collated batch with :meth:`decode_batch`, on the GPU once it is there).
        year: year of the MODIS tree-cover band (default: the S1 product's year; last band if absent).

    Sample: ``s1`` (C, H, W) float32 normalised, no-data 0; ``s1_valid`` (C, H, W) bool;
    ``worldcover``/``lcci`` (H, W) int64 (IGNORE_INDEX no-data); ``treecover`` (H, W) float32 %;
    ``biomass`` (H, W) Mg/ha; ``built`` (H, W) fraction; ``s2rgb`` (3, H, W) 0..1 median RGB;
    each float label with a ``<key>_valid`` bool mask; ``id`` and ``aoi`` strings.
    """

    def __init__(self, root, aois, split="train", products=ALL_PRODUCTS, limit_pct: float = 100.0, seed: int = 0,
                 normalization="fit", norm_tiles: int = 64, channels=INPUT_CHANNELS, cache_dir=None,
                 on_bad: str = "skip", year: int | None = None, progress: bool = True, decode: str = "sample"):
        if on_bad not in ("skip", "raise"):
            raise UserError(f"on_bad must be 'skip' or 'raise', got {on_bad!r}")
        if decode not in ("sample", "batch"):
            raise UserError(f"decode must be 'sample' or 'batch', got {decode!r}")
        self.decode = decode
        self.root = Path(root)
        self.aois = [aois] if isinstance(aois, str) else list(aois)
        if not self.aois:
            raise UserError("aois is empty: expected at least one AOI name")
        check_unique_aois(self.aois)
        self.splits = list(SPLITS) if split is None else parse_splits(split)
        self.products, self.ref_product, self.channels, self.specs, self.year = chip_reading(products, channels, year)
        self.seed = seed
        self.limit_pct = float(limit_pct)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.layouts: dict[str, AOILayout] = {}
        self.caches: dict[str, cache_mod.PackedCache] = {}
        self.skipped: dict[str, list[str]] = {}
        self._split_ids: dict[str, dict[str, list[str]]] = {}
        self.aoi_shapes: dict[str, tuple[int, int]] = {}  # AOI -> (H, W) of its chips

        selected: list[str] = []
        for aoi in self.aois:
            layout = AOILayout.find(self.root, aoi)
            self.layouts[aoi] = layout
            df = read_splits(layout)
            have = available_products(layout)
            for p in self.products:
                if p not in have:
                    raise FileNotFoundError(f"product folder {str(layout.product_dir(p))!r} does not exist "
                                            f"(products of AOI {aoi!r}: {have or 'none'})")
            self._split_ids[aoi] = {s: sorted(df.loc[df["split"] == s, "identifier"]) for s in SPLITS}
            ids = sorted(df.loc[df["split"].isin(self.splits), "identifier"])
            good, skipped = self._validate(aoi, layout, ids, df, on_bad, progress)
            for r, v in skipped.items():
                self.skipped.setdefault(r, []).extend(f"{aoi}/{i}" for i in v)
            selected.extend(f"{aoi}/{i}" for i in good)
        if len(set(self.aoi_shapes.values())) > 1:
            sizes = ", ".join(f"{a} {h}x{w} px" for a, (h, w) in self.aoi_shapes.items())
            raise UserError(f"the AOIs' chips differ in size ({sizes}): one dataset needs chips of one size; "
                            "use the AOIs in separate datasets")

        self.n_selected = len(selected)
        keep = label_fraction_ids(selected, self.limit_pct, seed) if selected else []
        self.items = [tuple(k.split("/", 1)) for k in keep]
        if not self.items:
            raise UserError(f"no valid chips for AOIs {self.aois} split {self.splits} under {str(self.root)!r} "
                             f"(skipped: {self.skip_counts})")
        self.norm = self._resolve_norm(normalization, norm_tiles, seed, progress)

    # -- validation and cache -----------------------------------------------------------------
    def _validate(self, aoi, layout, ids, df, on_bad, progress):
        if self.cache_dir is None:
            shapes: dict = {}
            good, skipped = validate_chips(layout, self.products, ids, progress, on_bad, channels=self.channels,
                                           shapes=shapes)
            if good:
                self.aoi_shapes[aoi] = shapes[good[0]]
            return good, skipped
        key = cache_mod.cache_key(layout, self.products, self.year, self.channels)
        pc = cache_mod.open_cache(self.cache_dir, layout, self.products, self.year, key)
        if pc is None or not set(df["identifier"]) <= pc.validated:
            all_ids = sorted(df["identifier"])
            details: dict[str, str] = {}
            good_all, skipped_all = validate_chips(layout, self.products, all_ids, progress, "skip", details, warn=False,
                                                   channels=self.channels)
            pc = cache_mod.build_cache(self.cache_dir, layout, self.products, good_all, self.year, skipped_all,
                                       progress, details, key)
        self.caches[aoi] = pc
        arrays = pc.index.get("arrays") or {}
        if arrays:
            self.aoi_shapes[aoi] = tuple(next(iter(arrays.values()))["shape"][-2:])
        sel = set(ids)
        skipped = {r: [i for i in v if i in sel] for r, v in pc.skipped.items()}
        skipped = {r: v for r, v in skipped.items() if v}
        if on_bad == "raise" and skipped:
            reason, bad = next(iter(skipped.items()))
            first = pc.details.get(bad[0], f"M3LEO: chip {bad[0]!r} of AOI {aoi!r} is bad ({reason})")
            raise UserError(f"{first} (bad chips in AOI {aoi!r}: {skipped})")
        # report the selected bad chips (the validation may come from the cache index)
        for r, v in skipped.items():
            for i in v:
                warnings.warn(pc.details.get(i, f"M3LEO: skipping chip {i!r} of AOI {aoi!r} ({r})"), stacklevel=3)
        good = [i for i in ids if i in pc]
        return good, skipped

    def _record(self, aoi: str, ident: str, products=None) -> dict[str, np.ndarray]:
        pc = self.caches.get(aoi)
        if pc is not None:
            return pc.read(ident)
        layout = self.layouts[aoi]
        try:
            return read_record(layout, products or self.products, ident, self.year)
        except Exception as e:
            raise UserError(f"M3LEO: failed to read chip {ident!r} of AOI {aoi!r} under "
                             f"{str(layout.chips_dir)!r}: {e}") from e

    # -- normalisation -----------------------------------------------------------------------
    def _norm_key(self, norm_tiles, seed) -> dict:
        return normalization_key(self.layouts, self.ref_product, self.channels, norm_tiles, seed,
                                 {a: self._split_ids[a]["train"] for a in self.aois})

    def fit_normalization(self, norm_tiles: int = 64, seed: int = 0, progress: bool = True) -> Normalization:
        """Fit mean/std per channel over valid pixels of ``norm_tiles`` train chips (sampled with ``seed``)."""
        from tqdm.auto import tqdm

        if product_family(self.ref_product) != "s1grd":
            raise UserError("normalisation needs an s1grd product in products")
        train = [(a, i) for a in self.aois for i in self._split_ids[a]["train"]]
        bad = set(self.skipped_all_ids())
        order = np.random.default_rng(seed).permutation(len(train))
        picked = 0
        tiles = []
        bar = tqdm(total=min(norm_tiles, len(train)), desc="fitting normalisation", disable=not progress, leave=False)
        for j in order:
            if picked >= norm_tiles:
                break
            aoi, ident = train[j]
            if f"{aoi}/{ident}" in bad:
                continue
            try:
                if aoi in self.caches and ident in self.caches[aoi]:
                    rec = self.caches[aoi].read(ident)
                else:
                    rec = read_record(self.layouts[aoi], [self.ref_product], ident, self.year)
            except Exception as e:
                warnings.warn(f"normalisation: skipping train chip {ident!r} of AOI {aoi!r}: {e}", stacklevel=2)
                continue
            if not rec["s1"].any():
                continue
            tiles.append(_s1_channels_db(rec, self.specs))
            picked += 1
            bar.update(1)
        bar.close()
        if not tiles:
            raise UserError(f"normalisation: no valid train chip in AOIs {self.aois}")
        return fit_normalization(tiles, self.channels, self._norm_key(norm_tiles, seed))

    def _resolve_norm(self, normalization, norm_tiles, seed, progress):
        if normalization is None:
            return None
        if isinstance(normalization, Normalization):
            norm = normalization
        elif isinstance(normalization, str) and normalization == "fit":
            key = self._norm_key(norm_tiles, seed)
            folder = paths.norm_dir(self.cache_dir)
            self.norm_path = folder / f"norm_{norm_key_hash(key)}.json"
            norm = load_or_fit(self.norm_path, key, lambda: self.fit_normalization(norm_tiles, seed, progress))
        elif isinstance(normalization, (str, Path)):
            self.norm_path = Path(normalization)
            if self.norm_path.is_file():
                norm = Normalization.load(self.norm_path)
            else:
                norm = self.fit_normalization(norm_tiles, seed, progress)
                norm.save(self.norm_path)
        else:
            raise UserError(f"normalization must be 'fit', a JSON path, a Normalization or None; got {normalization!r}")
        if tuple(norm.channels) != self.channels:
            raise UserError(f"normalisation channels {list(norm.channels)} do not match the dataset's {list(self.channels)}")
        return norm

    # -- reporting ---------------------------------------------------------------------------
    def skipped_all_ids(self) -> list[str]:
        return [i for v in self.skipped.values() for i in v]

    @property
    def skip_counts(self) -> dict[str, int]:
        """reason -> number of skipped chips."""
        return {r: len(v) for r, v in self.skipped.items()}

    @property
    def n_tiles(self) -> int:
        """Number of chips (tiles) in the dataset after validation and the label fraction."""
        return len(self.items)

    def summary(self) -> dict:
        """Counts for reports: tiles, selected valid chips, label fraction, skipped per reason."""
        return {"aois": self.aois, "splits": self.splits, "limit_pct": self.limit_pct, "seed": self.seed,
                "n_tiles": self.n_tiles, "n_valid_selected": self.n_selected, "skipped": self.skip_counts,
                "products": list(self.products), "channels": list(self.channels),
                "cache": {a: str(c.folder) for a, c in self.caches.items()}}

    # -- torch Dataset -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    @property
    def chip_shape(self) -> tuple[int, int]:
        """(H, W) pixels of the chips (of the first one)."""
        rec = self._record(*self.items[0])
        return tuple(int(n) for n in next(iter(rec.values())).shape[-2:])

    def __getitem__(self, i: int) -> dict:
        aoi, ident = self.items[i]
        rec = self._record(aoi, ident)
        if self.decode == "batch":
            sample = {"record": _record_tensors(rec)}
        else:
            sample = record_to_sample(rec, self.specs, self.norm)
        sample["id"] = ident
        sample["aoi"] = aoi
        return sample

    def decode_batch(self, batch: dict) -> dict:
        """A collated batch of ``decode="batch"`` items -> the canonical batch, decoded on the batch's device.

        Other keys (``id``, ``aoi``, ``mask_noise``...) pass through; a decoded batch is returned as is.
        """
        if "record" not in batch:
            return batch
        out = {k: v for k, v in batch.items() if k != "record"}
        out.update(decode_record(batch["record"], self.specs, self.norm))
        return out

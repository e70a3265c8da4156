"""Fault injection: declared no-data, dB passed as linear, bad incidence angles, crafted and truncated
checkpoints and encoders, an interrupted ``simulate``, and how the command line reports errors.

Each test injects one fault a real user meets and checks what happens now: NaN instead of a plausible
value, a one-line error naming the parameter or file, or a clean retry. Fast (a few seconds in all).
"""

from __future__ import annotations

import pickle
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401 - registers .rio
import torch
import xarray as xr

from sarssl.errors import UserError
from sarssl.preprocess import (
    NODATA, boxcar, calibrate, decode_m3leo, encode_m3leo, enhanced_lee, frost, from_db, gamma_map,
    layover_shadow_mask, lee, lee_sigma, local_incidence_angle, refined_lee, s1grd_to_input_channels,
    seasonal_composite, terrain_flatten, to_db,
)
from sarssl.preprocess.calibration import CalibrationLUT, Vectors

FILTERS = {"boxcar": boxcar, "lee": lee, "enhanced_lee": enhanced_lee, "refined_lee": refined_lee,
           "frost": frost, "gamma_map": gamma_map, "lee_sigma": lee_sigma}
N = 24
SP = 10.0


def _grid(data, crs="EPSG:32633"):
    """A georeferenced (y, x) or (band, y, x) DataArray on a 10 m UTM grid."""
    dims = ("y", "x") if data.ndim == 2 else ("band", "y", "x")
    coords = {"y": 5000.0 - SP * np.arange(data.shape[-2]), "x": 300000.0 + SP * np.arange(data.shape[-1])}
    return xr.DataArray(data, dims=dims, coords=coords).rio.write_crs(crs)


@pytest.fixture(scope="module")
def gamma_tile():
    """A GAMMA-style dB tile: speckled -12 dB land with a -99 dB no-data corner (declared via rio.nodata)."""
    rng = np.random.default_rng(0)
    db = (10 * np.log10(0.063 * rng.gamma(4.4, 1 / 4.4, (N, N)))).astype(np.float32)
    db[:8, :8] = -99.0
    return _grid(db).rio.write_nodata(-99.0)


# ------------------------------------------------------------------------------------------------
# declared no-data
# ------------------------------------------------------------------------------------------------
def test_from_db_declared_nodata_becomes_nan(gamma_tile):
    lin = from_db(gamma_tile)
    assert np.isnan(lin.values[:8, :8]).all()  # not 10**-9.9 = 1.3e-10, a plausible-looking power
    np.testing.assert_array_equal(lin.values[8:, 8:], from_db(gamma_tile.values[8:, 8:]))
    assert "_FillValue" not in lin.attrs  # no-data is NaN now, not -99
    np.testing.assert_array_equal(from_db(gamma_tile.values, nodata=-99.0), lin.values)  # numpy: nodata=
    by_attr = xr.DataArray(gamma_tile.values, dims=("y", "x"), attrs={"_FillValue": -99.0})
    by_encoding = xr.DataArray(gamma_tile.values, dims=("y", "x"))
    by_encoding.encoding["_FillValue"] = -99.0
    for da in (by_attr, by_encoding, by_attr.chunk(8)):
        np.testing.assert_array_equal(from_db(da).values, lin.values)
    back = to_db(from_db(gamma_tile)).values
    assert np.isnan(back[:8, :8]).all()
    np.testing.assert_allclose(back[8:, 8:], gamma_tile.values[8:, 8:], atol=1e-4)


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_speckle_filters_honour_declared_nodata(gamma_tile, name):
    f = FILTERS[name]
    size = 5
    raw = (10 ** (gamma_tile.values / 10)).astype(np.float32)  # the void as 1.3e-10: a plausible-looking power
    fill = raw[0, 0]
    lin = _grid(raw).rio.write_nodata(fill)  # linear tile declaring its fill value
    nan = np.where(raw == fill, np.nan, raw)
    ref = f(nan, size)  # the reference: the void written as NaN
    out = f(lin, size)
    np.testing.assert_array_equal(out.values, ref)  # valid pixels next to no-data do not shift
    assert np.isnan(out.values[:8, :8]).all()  # no-data never comes out as a plausible value
    np.testing.assert_allclose(f(lin.chunk({"y": 12, "x": 12}), size).values, ref, rtol=1e-5)  # lazy, same
    np.testing.assert_array_equal(f(raw, size, nodata=fill), ref)  # numpy with nodata=
    by_attr = xr.DataArray(raw, dims=("y", "x"), attrs={"_FillValue": fill})
    np.testing.assert_array_equal(f(by_attr, size).values, ref)
    # the fault this guards against: used as data, the void comes out as values and (except for lee_sigma,
    # whose sigma range drops outliers) drags its valid neighbours down
    used = f(raw, size)
    assert np.isfinite(used[:8, :8]).all()
    shift = np.nanmax(np.abs(10 * np.log10(used[8:11, 8:11] / ref[8:11, 8:11])))
    assert shift > 0.5 or name == "lee_sigma", shift


def test_speckle_filter_on_linear_with_zero_fill():
    rng = np.random.default_rng(1)
    img = (0.05 * rng.gamma(4.4, 1 / 4.4, (N, N))).astype(np.float32)
    img[:, :5] = 0.0  # GRD border fill, declared as no-data
    da = _grid(img).rio.write_nodata(0)
    out = lee(da, 5, looks=4.4)
    nan = img.copy()
    nan[:, :5] = np.nan
    np.testing.assert_array_equal(out.values, lee(nan, 5, looks=4.4))
    assert np.isnan(out.values[:, :5]).all()


def test_dem_nodata_never_gives_finite_gamma0():
    x = np.arange(N) * SP
    z = 300.0 + 0.2 * x[None, :] * np.ones((N, 1))
    z[10:13, 10:13] = -32768.0  # DEM void
    dem = _grid(z).rio.write_nodata(-32768.0)
    s0 = xr.full_like(dem, 0.05)
    from scipy import ndimage

    void = z == -32768.0
    reach = ndimage.binary_dilation(void, structure=ndimage.generate_binary_structure(2, 1))  # central differences
    for kw in ({}, {"mask_invalid": False}):
        g0 = terrain_flatten(s0, dem, 35.0, 90.0, **kw)
        np.testing.assert_array_equal(np.isnan(g0.values), reach)  # NaN on the void and its gradient neighbours
    mask = layover_shadow_mask(dem, 35.0, 90.0)
    assert (mask.values[10:13, 10:13] & NODATA).all() and (mask.values[:5] == 0).all()
    assert np.isnan(local_incidence_angle(dem, 35.0, 90.0).values[11, 11])
    # numpy DEM: dem_nodata=; lazy dask DEM: declared no-data stays lazy and gives the same
    g_np = terrain_flatten(s0.values, z, 35.0, 90.0, spacing=(-SP, SP), dem_nodata=-32768)
    np.testing.assert_array_equal(g_np, terrain_flatten(s0, dem, 35.0, 90.0).values)
    g_lazy = terrain_flatten(s0, dem.chunk({"y": 12, "x": 12}), 35.0, 90.0)
    np.testing.assert_array_equal(g_lazy.values, g_np)
    # an undeclared -32768 is suspicious: a warning says how to declare it
    with pytest.warns(UserWarning, match="dem has 9 value.*-32768.*dem_nodata"):
        terrain_flatten(s0.values, z, 35.0, 90.0, spacing=(-SP, SP))


def test_terrain_sigma0_declared_nodata():
    dem = _grid(np.zeros((N, N)))
    s0 = np.full((N, N), 0.05, np.float32)
    s0[0, :] = -9999.0
    g0 = terrain_flatten(_grid(s0).rio.write_nodata(-9999.0), dem, 35.0, 90.0)
    assert np.isnan(g0.values[0]).all()
    np.testing.assert_allclose(g0.values[1:], 0.05 / np.cos(np.deg2rad(35.0)), rtol=1e-6)


def _stack(values_db, nodata=None):
    times = np.array(["2019-12-15", "2020-01-15", "2020-04-15", "2020-07-15", "2020-10-15"], dtype="datetime64[ns]")
    da = xr.DataArray(values_db, dims=("time", "band", "y", "x"),
                      coords={"time": times, "band": ["vv", "vh"], "pass": ("time", ["asc"] * 5),
                              "y": 5000.0 - SP * np.arange(values_db.shape[-2]),
                              "x": 300000.0 + SP * np.arange(values_db.shape[-1])})
    if nodata is not None:
        da.attrs["_FillValue"] = nodata
    return da


def test_composites_honour_declared_nodata():
    rng = np.random.default_rng(2)
    db = (-12 + rng.normal(0, 1, (5, 2, 6, 6))).astype(np.float32)
    db[1, :, :2, :2] = -99.0  # one winter acquisition has a void
    ref_db = db.copy()
    ref_db[1, :, :2, :2] = np.nan
    got = seasonal_composite(_stack(db, -99.0), 2020, units="db")
    ref = seasonal_composite(_stack(ref_db), 2020, units="db")
    np.testing.assert_array_equal(got.values, ref.values)
    assert np.nanmin(got.values) > -50  # -99 never reaches a composite
    lin = (10 ** (db / 10)).astype(np.float32)
    lin[1, :, :2, :2] = 0.0
    got_lin = seasonal_composite(_stack(lin, 0.0), 2020, units="linear")
    np.testing.assert_allclose(got_lin.values, seasonal_composite(_stack(10 ** (ref_db / 10)), 2020).values, atol=1e-5)
    # M3LEO coding: a declared -99 dB encodes as code 0 (no-data); a declared code decodes to NaN
    codes = encode_m3leo(_grid(np.array([[-99.0, -12.0]], np.float32)).rio.write_nodata(-99.0))
    assert codes.values[0, 0] == 0 and codes.values[0, 1] > 0  # -99 dB is code 0 (no-data), not clipped to -30
    raw = _grid(np.array([[255, 153]], np.uint8)).rio.write_nodata(255)
    assert np.isnan(decode_m3leo(raw).values[0, 0]) and np.isfinite(decode_m3leo(raw).values[0, 1])


def test_s1grd_to_channels_honours_declared_nodata():
    from sarssl.data.products import S1GRD_BANDS

    db = np.full((len(S1GRD_BANDS), 2, 2), -12.0, np.float32)
    db[:, 0, 0] = -99.0
    da = xr.DataArray(db, dims=("band", "y", "x"), coords={"band": list(S1GRD_BANDS)}, attrs={"nodata": -99.0})
    ch = s1grd_to_input_channels(da)
    assert np.isnan(ch.values[:, 0, 0]).all() and np.isfinite(ch.values[:, 1, 1]).all()


def test_calibrate_honours_declared_nodata():
    vec = Vectors(np.array([0, 10]), [np.array([0.0, 10.0])] * 2, [np.array([100.0, 100.0])] * 2)
    cal = CalibrationLUT({"sigmaNought": vec})
    dn = np.full((4, 4), 50, np.uint16)
    dn[0] = 65535
    out = calibrate(xr.DataArray(dn, dims=("y", "x"), attrs={"_FillValue": 65535}), cal)
    assert np.isnan(out.values[0]).all()
    np.testing.assert_allclose(out.values[1:], 0.25)
    np.testing.assert_array_equal(calibrate(dn, cal, nodata=65535), out.values)


def test_no_declared_nodata_leaves_results_unchanged():
    rng = np.random.default_rng(3)
    img = _grid((0.05 * rng.gamma(4.4, 1 / 4.4, (N, N))).astype(np.float32))
    from sarssl.preprocess import mask_nodata

    arr = img.values
    assert mask_nodata(img) is img and mask_nodata(arr) is arr
    nan_fill = img.copy()
    nan_fill.encoding["_FillValue"] = np.nan  # what zarr/netCDF readers declare for floats: nothing to mask
    assert mask_nodata(nan_fill) is nan_fill
    np.testing.assert_array_equal(lee(img, 5).values, lee(img.values, 5))


# ------------------------------------------------------------------------------------------------
# dB passed as linear power, bad incidence angles
# ------------------------------------------------------------------------------------------------
def test_db_passed_as_linear_is_refused(gamma_tile):
    db = gamma_tile.where(gamma_tile > -50)  # valid dB values, mostly -20..-5
    with pytest.raises(UserError, match=r"lee: image looks like dB.*from_db"):
        lee(db, 5)
    with pytest.raises(UserError, match="refined_lee: image looks like dB"):
        refined_lee(db.values, 5)
    with pytest.raises(UserError, match="terrain_flatten: sigma0 looks like dB"):
        terrain_flatten(db, _grid(np.zeros((N, N))), 35.0, 90.0)
    with pytest.raises(UserError, match="to_db: power looks like dB"):
        to_db(db)
    stack = _stack(np.full((5, 2, 4, 4), -12.0, np.float32))
    with pytest.raises(UserError, match=r"seasonal_composite: stack looks like dB.*units='db'"):
        seasonal_composite(stack, 2020, units="linear")
    assert isinstance(UserError("x"), ValueError)  # old `except ValueError` callers still catch it


def test_nonpositive_linear_power_warns():
    img = np.full((N, N), 0.05, np.float32)
    img[:3] = 0.0
    with pytest.warns(UserWarning, match=r"lee: image has 72 of 576 values <= 0.*nodata="):
        lee(img, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lee(np.where(img > 0, img, np.nan), 5)  # NaN no-data: silent
        to_db(np.array([1e-3, 0.0, -1e-4, 0.1]))  # to_db documents non-positive -> NaN: silent


@pytest.mark.parametrize("incidence, match", [
    (95.0, "between 0 and 90"), (-5.0, "between 0 and 90"), (0.0, "between 0 and 90"), (90.0, "between 0 and 90"),
    (np.nan, "no finite value"), (np.inf, "infinite"), (None, "degrees"),
    (np.array([[35.0] * N] * (N - 1) + [[120.0] * N]), r"24 of 576 value\(s\) are outside"),
])
def test_bad_incidence_is_refused(incidence, match):
    dem = _grid(np.zeros((N, N)))
    with pytest.raises(UserError, match=rf"terrain_flatten: incidence .*{match}"):
        terrain_flatten(xr.full_like(dem, 0.05), dem, incidence, 90.0)


def test_incidence_in_radians_warns_and_nan_look_azimuth_fails():
    dem = _grid(np.zeros((N, N)))
    with pytest.warns(UserWarning, match="radians"):
        local_incidence_angle(dem, np.deg2rad(35.0), 90.0)
    with pytest.raises(UserError, match="look_azimuth"):
        layover_shadow_mask(dem, 35.0, float("nan"))
    grid = np.full((N, N), 35.0)
    grid[0, 0] = np.nan  # a per-pixel grid may have no-data pixels: NaN out, the rest fine
    g0 = terrain_flatten(xr.full_like(dem, 0.05), dem, grid, 90.0)
    assert np.isnan(g0.values[0, 0]) and np.isfinite(g0.values[1:]).all()


# ------------------------------------------------------------------------------------------------
# checkpoints and encoder weights
# ------------------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this calls ``open(marker, "w")``: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_checkpoint_runs_no_code(tmp_path):
    from sarssl.train.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    for kind in ("torch", "pickle"):
        path = tmp_path / kind / "checkpoint.pt"
        path.parent.mkdir()
        obj = {"format": "sarssl-train-1", "step": 3, "task": {"w": torch.zeros(2)}, "x": _Payload(marker)}
        if kind == "torch":
            torch.save(obj, path)
        else:
            path.write_bytes(pickle.dumps(obj, protocol=2))  # a raw (non-zip) pickle
        with pytest.raises(UserError, match=rf"checkpoint {re.escape(str(path))} holds objects other than tensors.*"
                                            "could run code"):
            load_checkpoint(path)
        assert not marker.exists()


def test_crafted_checkpoint_stops_a_resume(tmp_path):
    from torch import nn
    from torch.utils.data import TensorDataset

    from sarssl.models.task import TrainTask
    from sarssl.train.engine import TrainConfig, Trainer

    class Task(TrainTask):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def training_step(self, batch, info):
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            return {"loss": self.lin(x).pow(2).mean()}

    marker = tmp_path / "pwned"
    torch.save({"task": _Payload(marker)}, tmp_path / "checkpoint.pt")
    cfg = TrainConfig(epochs=1, batch_size=2, out_dir=str(tmp_path), device="cpu", progress=False, tensorboard=False)
    with pytest.raises(UserError, match="checkpoint.pt holds objects other than tensors"):
        Trainer(Task(), TensorDataset(torch.zeros(4, 2)), cfg).fit()
    assert not marker.exists()


def test_truncated_checkpoint_names_the_file(tmp_path):
    from sarssl.train.checkpoint import atomic_save, load_checkpoint

    path = atomic_save({"step": 1, "w": torch.zeros(100)}, tmp_path / "checkpoint.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match=rf"checkpoint {re.escape(str(path))} could not be read.*delete it"):
        load_checkpoint(path)


def test_rng_state_is_weights_only_safe_and_exact(tmp_path):
    from sarssl.train.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state

    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    np.random.normal()  # leaves a cached gaussian in the state
    path = atomic_save({"rng": rng_state()}, tmp_path / "checkpoint.pt")
    expect = (random.random(), np.random.normal(), np.random.random(3).tolist(), torch.rand(3).tolist())
    state = torch.load(path, weights_only=True)["rng"]  # no allow-list needed: only tensors and plain values
    set_rng_state(state)
    assert (random.random(), np.random.normal(), np.random.random(3).tolist(), torch.rand(3).tolist()) == expect
    # a checkpoint written before (numpy state as an ndarray tuple) still loads and resumes exactly
    np.random.seed(7)
    old = {"rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}
    torch.save(old, tmp_path / "old.pt")
    want = np.random.random(4).tolist()
    set_rng_state(load_checkpoint(tmp_path / "old.pt")["rng"])
    assert np.random.random(4).tolist() == want


#: a small timm ViT (2 blocks) with the package's encoder spec keys (encoder.json)
SPEC = {"name": "vit_tiny_patch16_224", "patch_size": 8, "img_size": 16, "in_chans": 12, "depth": 2}


def _timm(**over):
    import timm

    kw = {**SPEC, **over}
    return timm.create_model(kw.pop("name"), pretrained=False, num_classes=0, **kw)


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    from sarssl.train.checkpoint import save_encoder

    torch.manual_seed(0)
    model = _timm()
    out = tmp_path_factory.mktemp("enc")
    save_encoder(model.state_dict(), out, SPEC)
    return out, model


def test_encoder_safetensors_loads_into_plain_timm(encoder_run):
    from safetensors.torch import load_file

    from sarssl.train.checkpoint import load_encoder

    out, model = encoder_run
    state = load_file(out / "encoder.safetensors")
    plain = _timm()  # timm.create_model(name, in_chans=12, num_classes=0, ...)
    plain.load_state_dict(state, strict=True)
    pth = torch.load(out / "encoder.pth", weights_only=True)
    assert state.keys() == pth.keys() and all(torch.equal(state[k], pth[k]) for k in state)
    assert all(torch.equal(a, b) for a, b in zip(load_encoder(out).state_dict().values(), pth.values()))
    x = torch.randn(1, 12, 16, 16)
    model.eval()
    plain.eval()
    torch.testing.assert_close(plain(x), model(x))


def test_truncated_or_mismatched_encoder_names_the_file(encoder_run, tmp_path):
    import json

    from sarssl.train.checkpoint import StateDictMismatchError, load_encoder

    out, _ = encoder_run
    bad = tmp_path / "truncated"
    shutil.copytree(out, bad)
    (bad / "encoder.pth").write_bytes((out / "encoder.pth").read_bytes()[:1000])
    with pytest.raises(UserError, match=rf"encoder weights {re.escape(str(bad / 'encoder.pth'))} could not be read"):
        load_encoder(bad)
    for name, over, what in (("deeper", {"depth": 3}, r"missing key\(s\) \(blocks\.2\."),
                             ("patch", {"patch_size": 4}, r"shape mismatch.*patch_embed\.proj\.weight")):
        other = tmp_path / name
        shutil.copytree(out, other)
        (other / "encoder.json").write_text(json.dumps({**SPEC, **over}))
        with pytest.raises(StateDictMismatchError, match=rf"{re.escape(str(other / 'encoder.pth'))} does not fit the "
                                                         rf"vit_tiny_patch16_224 encoder of .*encoder\.json: .*{what}"):
            load_encoder(other)
    assert issubclass(StateDictMismatchError, RuntimeError) and issubclass(StateDictMismatchError, UserError)
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted"
    shutil.copytree(out, crafted)
    torch.save({"x": _Payload(marker)}, crafted / "encoder.pth")
    with pytest.raises(UserError, match="encoder weights .* holds objects other than tensors"):
        load_encoder(crafted)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# simulate: interrupted, then retried
# ------------------------------------------------------------------------------------------------
def _fail_after(monkeypatch, n):
    import sarssl.data.simulate as sim

    real = sim.write_chip_tif  # the chip writer the simulator calls
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(28, "No space left on device (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(sim, "write_chip_tif", flaky)


def test_interrupted_simulate_leaves_nothing_and_retry_works(tmp_path, monkeypatch):
    from sarssl.data.layout import list_aois
    from sarssl.data.simulate import simulate_region

    root = tmp_path / "root"
    kw = dict(n_chips=2, chip_size=8, progress=False)
    with monkeypatch.context() as m:
        _fail_after(m, 5)
        with pytest.raises(OSError, match="injected"):
            simulate_region(root, **kw)
    assert not (root / "sim-a").exists() and list(root.iterdir()) == []  # no half-written AOI, no leftovers
    layout = simulate_region(root, **kw)  # the retry needs no overwrite
    assert list_aois(root) == ["sim-a"] and (layout.aoi_dir / "simulation.json").is_file()
    # a failed overwrite keeps the previous AOI complete
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with monkeypatch.context() as m:
        _fail_after(m, 3)
        with pytest.raises(OSError, match="injected"):
            simulate_region(root, overwrite=True, **{**kw, "n_chips": 3})
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    layout = simulate_region(root, overwrite=True, **{**kw, "n_chips": 3})
    assert len(layout.split_csv.read_text().splitlines()) == 4 and list_aois(root) == ["sim-a"]


def test_partial_folder_of_a_killed_simulate_is_cleaned(tmp_path):
    from sarssl.data.simulate import simulate_region

    root = tmp_path / "root"
    stale = root / ".sim-a.simulate-partial-4194399-deadbeef" / "sim-a"  # a pid above pid_max: long gone
    stale.mkdir(parents=True)
    (stale / "half.tif").write_bytes(b"\0" * 10)
    simulate_region(root, n_chips=2, chip_size=8, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["sim-a"]


# ------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------
def test_cli_user_error_is_one_line_exit_2(tmp_path, capsys):
    from sarssl.cli import main

    assert main(["simulate", str(tmp_path), "--aoi", "bad_name", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "aoi must be" in err[0] and "Traceback" not in err[0]
    args = ["simulate", str(tmp_path), "--n-chips", "2", "--size", "8", "--quiet"]
    assert main(args) == 0
    assert main(args) == 2  # exists: the message points at --overwrite, which now exists
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]
    assert main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize("exc", [RuntimeError("boom inside"), ValueError("internal value problem"), OSError("disk")])
def test_cli_unexpected_error_keeps_traceback(tmp_path, capsys, monkeypatch, exc):
    import sarssl.data.simulate as sim
    from sarssl.cli import main

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(sim, "simulate_region", broken)
    assert main(["simulate", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Traceback") and str(exc) in "\n".join(err)
    assert "bug in sarssl" in err[-1] and "report it with the traceback" in err[-1]
    with pytest.raises(type(exc)):
        main(["--debug", "simulate", str(tmp_path), "--quiet"])


# ------------------------------------------------------------------------------------------------
# chips: odd-sized, input channels all no-data; stale caches; repeated AOIs; sarssl stats
# ------------------------------------------------------------------------------------------------
def _rewrite_s1(layout, ident, codes):
    """Overwrite one chip's S1 GeoTIFF in place with ``codes`` (16, H, W) uint8 on the chip's origin."""
    import rasterio

    from sarssl.data.products import S1GRD_BANDS

    path = layout.chip_path("s1grd-2020", ident)
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(height=codes.shape[1], width=codes.shape[2])
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes)
        dst.descriptions = tuple(S1GRD_BANDS)
    return path


@pytest.fixture
def chips(tmp_path, write_m3leo):
    return write_m3leo(tmp_path / "root", n_chips=10, size=32, bad=False)


def _dataset(fx, **kw):
    from sarssl.data.datasets import M3LEODataset

    kw = {"split": "train", "products": ("s1grd-2020", "esaworldcover-2020"), "normalization": None,
          "progress": False, **kw}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = M3LEODataset(fx.layout.root, fx.layout.aoi, **kw)
    return ds, [str(w.message) for w in caught]


@pytest.mark.parametrize("cached", [False, True])
def test_odd_sized_chip_is_skipped_naming_the_file(chips, tmp_path, cached):
    fx = chips
    train = [i for i in fx.ids if fx.splits[i] == "train"]
    odd = train[2]
    path = _rewrite_s1(fx.layout, odd, fx.truth[odd]["s1"][:, :24, :24])  # 24x24 among 32x32 chips
    ds, msgs = _dataset(fx, cache_dir=tmp_path / "cache" if cached else None)
    assert ds.skipped == {"shape": [f"fx/{odd}"]} and ds.skip_counts == {"shape": 1}
    assert any(str(path) in m and "24x24" in m and "32x32" in m and "(shape)" in m for m in msgs)
    assert len(ds) == len(train) - 1 and ds.chip_shape == (32, 32)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=len(ds)))  # no collate traceback
    assert batches[0]["worldcover"].shape == (len(ds), 32, 32)
    with pytest.raises(UserError, match=rf"{odd}.*\(shape\)"):
        _dataset(fx, on_bad="raise", cache_dir=tmp_path / "cache" if cached else None)


def test_aois_of_different_chip_sizes_are_refused(tmp_path, write_m3leo):
    from sarssl.data.datasets import M3LEODataset

    write_m3leo(tmp_path, "aa", n_chips=5, size=32, bad=False)
    write_m3leo(tmp_path, "bb", n_chips=5, size=16, bad=False)
    with pytest.raises(UserError, match=r"chips differ in size \(aa 32x32 px, bb 16x16 px\)"):
        M3LEODataset(tmp_path, ["aa", "bb"], products=("s1grd-2020",), normalization=None, progress=False)


@pytest.mark.parametrize("cached", [False, True])
def test_chip_with_every_input_channel_nodata_is_skipped(chips, tmp_path, cached):
    from sarssl.data.m3leo import channel_names
    from sarssl.data.products import S1GRD_BANDS

    fx = chips
    train = [i for i in fx.ids if fx.splits[i] == "train"]
    des_only = train[1]
    codes = fx.truth[des_only]["s1"].copy()
    codes[[k for k, b in enumerate(S1GRD_BANDS) if b.endswith("asc")]] = 0  # descending-only coverage
    path = _rewrite_s1(fx.layout, des_only, codes)
    cache = tmp_path / "cache" if cached else None
    ds, msgs = _dataset(fx, cache_dir=cache)
    assert ds.skipped == {"input_nodata": [f"fx/{des_only}"]}
    assert any(str(path) in m and "none of the input channels has a valid pixel" in m and "descending" in m
               for m in msgs)
    assert f"fx/{des_only}" not in {f"{a}/{i}" for a, i in ds.items}
    # descending input channels see the chip as it is
    des, _ = _dataset(fx, channels=channel_names(pass_="des"), cache_dir=cache)
    assert des.skipped == {} and len(des) == len(train)


def test_zeroed_worldcover_chip_is_seen_by_a_new_cached_dataset(chips, tmp_path):
    """A label chip zeroed in place (and a repaired S1 chip): the next dataset on the same packed cache folder
    reads the files as they are now, and the numbers of an unchanged dataset stay identical."""
    import rasterio

    from sarssl.data.products import IGNORE_INDEX

    fx = chips
    cache = tmp_path / "cache"
    before, _ = _dataset(fx, cache_dir=cache)
    again, _ = _dataset(fx, cache_dir=cache)
    assert again.items == before.items and again.caches["fx"].folder == before.caches["fx"].folder
    for i in range(len(before)):
        assert torch.equal(before[i]["worldcover"], again[i]["worldcover"])
    target = before.items[0][1]
    wc = fx.layout.chip_path("esaworldcover-2020", target)
    with rasterio.open(wc, "r+") as dst:
        dst.write(np.zeros((1, 32, 32), np.uint8))  # every pixel no-data (0), in place
    after, _ = _dataset(fx, cache_dir=cache)
    assert after.caches["fx"].folder != before.caches["fx"].folder
    k = [i for _, i in after.items].index(target)
    assert (after[k]["worldcover"] == IGNORE_INDEX).all() and not (before[0]["worldcover"] == IGNORE_INDEX).all()
    # a broken chip is skipped, and once repaired it is read again
    broken = before.items[1][1]
    s1 = fx.layout.chip_path("s1grd-2020", broken)
    good_bytes = s1.read_bytes()
    s1.write_bytes(b"II*\x00 not a GeoTIFF any more" * 10)
    skipped, _ = _dataset(fx, cache_dir=cache)
    assert skipped.skipped == {"corrupt": [f"fx/{broken}"]}
    s1.write_bytes(good_bytes)
    repaired, _ = _dataset(fx, cache_dir=cache)
    assert repaired.skipped == {} and len(repaired) == len(before)


def test_normalisation_is_keyed_by_content(tmp_path, monkeypatch):
    from sarssl.data.datasets import M3LEODataset
    from sarssl.data.simulate import simulate_region

    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "ws"))
    root = tmp_path / "root"
    kw = dict(split="train", products=("s1grd-2020",), normalization="fit", norm_tiles=4, progress=False)
    simulate_region(root, n_chips=10, chip_size=16, seed=0, progress=False)
    a = M3LEODataset(root, "sim-a", **kw)
    a2 = M3LEODataset(root, "sim-a", **kw)  # unchanged data: the same file, the same numbers
    assert a2.norm_path == a.norm_path and np.array_equal(a2.norm.mean, a.norm.mean) and a2.items == a.items
    assert a.norm.n_tiles == 4 and a.norm.key["data"]["sim-a"]["split"]
    fresh = a.fit_normalization(4, 0, progress=False)  # only the key changed: the statistics are a plain fit's
    assert np.array_equal(fresh.mean, a.norm.mean) and np.array_equal(fresh.std, a.norm.std)
    simulate_region(root, n_chips=10, chip_size=16, seed=1, progress=False, overwrite=True)  # same root, new seed
    b = M3LEODataset(root, "sim-a", **kw)
    assert b.norm_path != a.norm_path and not np.array_equal(b.norm.mean, a.norm.mean)
    assert len(list((tmp_path / "ws" / "norm").glob("norm_*.json"))) == 2


def test_repeated_aoi_is_refused_naming_it(chips, tmp_path, capsys):
    from sarssl.cli import main
    from sarssl.data.datasets import M3LEODataset
    from sarssl.train.pretrain import run_pretrain

    fx = chips
    with pytest.raises(UserError, match=r"AOI 'fx' given more than once"):
        M3LEODataset(fx.layout.root, ["fx", "fx"], normalization=None, progress=False)
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"AOI 'fx' given more than once"):
        run_pretrain("mae", "smoke", fx.layout.root, out, aoi=["fx", "fx"], progress=False)
    assert not out.exists()  # refused before anything was written
    for args in (["pretrain", "mae", "--profile", "smoke", "--data", str(fx.layout.root), "--out", str(out),
                  "--aoi", "fx", "--aoi", "fx"],
                 ["stats", str(fx.layout.root), "--aoi", "fx", "--aoi", "fx"]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'fx' given more than once" in err[0]


def test_stats_reports_the_tiles_it_used(chips, capsys):
    from sarssl.cli import main

    fx = chips
    n_train = sum(s == "train" for s in fx.splits.values())
    assert main(["stats", str(fx.layout.root), "--n-tiles", "1000000"]) == 0
    out = capsys.readouterr().out
    assert f"input channels over all {n_train} valid train tiles (dB)" in out and "1000000" not in out
    assert main(["stats", str(fx.layout.root), "--n-tiles", "2"]) == 0
    assert "input channels over 2 sampled train tiles (dB)" in capsys.readouterr().out


def test_truncated_chips_are_skipped_or_named(chips, tmp_path):
    """A truncated S1 chip is skipped at validation (its pixels are read); a truncated label chip passes the
    header check, then is skipped when the packed cache reads it, or named by the error of the sample."""
    fx = chips
    train = [i for i in fx.ids if fx.splits[i] == "train"]
    s1 = fx.layout.chip_path("s1grd-2020", train[0])
    s1.write_bytes(s1.read_bytes()[: s1.stat().st_size // 2])
    wc = fx.layout.chip_path("esaworldcover-2020", train[1])
    wc.write_bytes(wc.read_bytes()[: wc.stat().st_size - 600])
    ds, msgs = _dataset(fx, cache_dir=tmp_path / "cache")
    assert ds.skipped.get("corrupt") == [f"fx/{train[0]}"] and any(str(s1) in m for m in msgs)
    assert ds.skipped.get("read_error") == [f"fx/{train[1]}"] and any(str(wc) in m for m in msgs)
    plain, _ = _dataset(fx)
    assert plain.skipped == {"corrupt": [f"fx/{train[0]}"]}
    k = [i for _, i in plain.items].index(train[1])
    with pytest.raises(UserError, match=rf"failed to read chip '{train[1]}'"):
        plain[k]

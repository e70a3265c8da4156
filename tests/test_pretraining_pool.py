"""The unlabelled pretraining pool of the simulator (issue 16): extra regions next to sim-a, never sim-b.

Smoke sizes: pool regions of 16 chips of 32 px; one MAE run of one step.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from sarssl.errors import UserError
from sarssl.profiles import DataConfig, get_profile


def _pool_profile(regions: int = 2):
    smoke = get_profile("smoke")
    return smoke.with_overrides(data=dataclasses.replace(smoke.data, pool_regions=regions, pool_chips=16))


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "ws"))
    return tmp_path / "ws"


def test_profiles_size_the_pool():
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(DataConfig)}
    assert helps["pool_regions"] and helps["pool_chips"]
    cpu, gpu = get_profile("cpu").data, get_profile("gpu").data
    assert cpu.pool_regions * cpu.pool_chips >= 2000 > cpu.n_chips  # thousands of chips, more than the labelled set
    assert gpu.pool_regions * gpu.pool_chips > gpu.n_chips
    assert get_profile("smoke").data.pool_regions * get_profile("smoke").data.pool_chips <= 16
    assert get_profile("paper").data.pool_regions == 0


def test_pool_regions_sit_next_to_sim_a_with_their_own_seeds(ws):
    from sarssl.workspace import pretraining_pool, region_root, resolve_data

    profile = _pool_profile(2)
    root = resolve_data("sim", profile, progress=False).root
    aois = pretraining_pool(profile, progress=False)
    assert aois == ["sim-pool-100", "sim-pool-101"] and "sim-b" not in aois
    assert root == region_root(profile)
    for aoi in aois:
        sim = json.loads((root / aoi / "simulation.json").read_text())
        assert sim["parameters"]["seed"] not in (0, 1, 2, 3, 4)  # sim-a, sim-b, chapter 6's sim-c..e
        assert sim["parameters"]["n_chips"] == 16
    assert pretraining_pool(profile, progress=False) == aois  # made once, reused
    other = profile.with_overrides(data=dataclasses.replace(profile.data, pool_chips=20))
    with pytest.raises(UserError, match="holds 16 chips, not pool_chips=20"):
        pretraining_pool(other, progress=False)
    assert pretraining_pool(_pool_profile(0), progress=False) == []


def test_pretrained_run_on_the_simulator_pretrains_on_the_pool(ws):
    from sarssl.workspace import pretrained_run

    run = pretrained_run(_pool_profile(1), "mae", progress=False, epochs=1, max_steps=1, tensorboard=False)
    info = json.loads((run / "run.json").read_text())
    assert info["aois"] == ["sim-a", "sim-pool-100"]
    assert info["labelled_aois"] == info["identity"]["labelled_aois"] == ["sim-a"]


def test_pool_regions_zero_is_sim_a_alone(ws, monkeypatch):
    import sarssl.train.pretrain as pretrain
    from sarssl.workspace import pretrained_run

    calls = {}
    monkeypatch.setattr(pretrain, "run_pretrain", lambda *a, **kw: calls.update(kw))
    pretrained_run(_pool_profile(0), "dino", progress=False)
    assert calls["aoi"] == calls["labelled_aois"] == ["sim-a"]
    pretrained_run(_pool_profile(1), "dino", progress=False, pool_regions=0)  # an override switches it off too
    assert calls["aoi"] == ["sim-a"]


def test_dino_knn_monitor_and_normalisation_use_the_labelled_region_only(ws, monkeypatch, tmp_path):
    import sarssl.train.dino_setup as dino_setup
    from sarssl.profiles import train_config
    from sarssl.train.finetune_data import finetune_normalization
    from sarssl.train.pretrain import PRETRAIN_METHODS, PretrainContext
    from sarssl.workspace import pretraining_pool, resolve_data

    profile = _pool_profile(1)
    root = resolve_data("sim", profile, progress=False).root
    aois = ["sim-a", *pretraining_pool(profile, progress=False)]
    seen = {}
    monkeypatch.setattr(dino_setup, "prepare_dino", lambda cfg, ds, **kw: seen.update(ds=ds, **kw) or (0, 0, 0))
    ctx = PretrainContext(train_config("dino", profile), root, aois, tmp_path / "run", progress=False,
                          labelled_aois=["sim-a"])
    PRETRAIN_METHODS["dino"](ctx)
    assert seen["ds"].aois == aois
    assert seen["knn_train"].aois == seen["knn_test"].aois == ["sim-a"]
    assert seen["knn_test"].splits == ["val"]
    norm = finetune_normalization(root, "sim-a", profile)
    for ds in (seen["ds"], seen["knn_train"], seen["knn_test"]):
        assert ds.norm.mean == pytest.approx(norm.mean) and ds.norm.std == pytest.approx(norm.std)


def test_labelled_aois_must_be_pretraining_aois(tmp_path):
    from sarssl.profiles import train_config
    from sarssl.train.pretrain import PretrainContext

    with pytest.raises(UserError, match="sim-b"):
        PretrainContext(train_config("mae", "smoke"), tmp_path, ["sim-a"], tmp_path, labelled_aois=["sim-b"])
    assert PretrainContext(train_config("mae", "smoke"), tmp_path, ["sim-a"], tmp_path).labelled_aois == ["sim-a"]


def test_pretraining_reads_through_the_packed_cache_unless_switched_off(ws, tmp_path):
    """``data.packed_cache`` (on by default, off for ``paper``): the same samples, read from the packed cache
    under the workspace or from the chip files; the knob is not part of a run's identity."""
    import torch

    from sarssl.profiles import train_config
    from sarssl.train.pretrain import PretrainContext, identity_config, labelled_normalization, pretrain_dataset
    from sarssl.workspace import resolve_data

    profile = get_profile("smoke")
    assert profile.data.packed_cache and not get_profile("paper").data.packed_cache
    root = resolve_data("sim", profile, progress=False).root
    sets = {}
    for on in (True, False):
        cfg = train_config("mae", profile, {"packed_cache": on})
        ctx = PretrainContext(cfg, root, ["sim-a"], tmp_path / "run", progress=False)
        sets[on] = pretrain_dataset(ctx, labelled_normalization(ctx))
    assert list(sets[True].caches) == ["sim-a"] and not sets[False].caches
    assert (ws / "packed" / "sim-a").is_dir()
    assert len(sets[True]) == len(sets[False])
    for i in (0, len(sets[True]) - 1):
        assert torch.equal(torch.as_tensor(sets[True][i]["s1"]), torch.as_tensor(sets[False][i]["s1"]))
    on, off = (identity_config(train_config("mae", profile, {"packed_cache": v}).to_dict(), "mae") for v in (1, 0))
    assert on == off

"""``resolve_data``: a chapter's DATA (the simulator, a local folder in every layout, a Hub subset) -> one DataSource."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_hub import PUBLISHED, FakeHub, build_fake_hub  # noqa: E402
from test_own_geotiffs import make_folder  # noqa: E402

from sarssl.data.datasets import M3LEODataset  # noqa: E402
from sarssl.errors import UserError  # noqa: E402
from sarssl.profiles import get_profile  # noqa: E402
from sarssl.workspace import DATA_ENV, resolve_data  # noqa: E402

SMOKE = get_profile("smoke")  # 32 px images


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "ws"))
    monkeypatch.delenv(DATA_ENV, raising=False)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return build_fake_hub(tmp_path_factory.mktemp("fake"), aois=("conus",), n_chips=10, chip_size=16)


def test_hub_miniset_subset_is_fetched_resized_and_lacks_lcci(hub, tmp_path):
    fake = FakeHub(hub.folder)
    src = resolve_data("hub:M3LEO-miniset/conus", SMOKE, hub_api=fake, max_chips=6, progress=False)
    assert src.kind == "hub" and src.aois == ("conus",) and src.chip_size == 32
    assert src.has("s1grd-2020") and src.has("esaworldcover-2020") and not src.has("lcci-2020")
    assert "subset of 6 chips" in src.note and "resized from 16 px" in src.note and "gssic" in src.note
    ds = M3LEODataset(src.root, src.aoi, split=None, products=("s1grd-2020",), normalization=None, progress=False)
    assert len(ds) == 6 and ds[0]["s1"].shape == (12, 32, 32)
    n_calls = len(fake.calls)
    again = resolve_data("hub:M3LEO-miniset/conus", SMOKE, hub_api=fake, max_chips=6, progress=False)
    assert again.root == src.root and len(fake.calls) == n_calls  # nothing fetched twice
    assert src.run_name("mae").startswith("mae-hub-")


def test_hub_archive_is_unpacked(hub):
    src = resolve_data("hub:M3LEO/conus", SMOKE, hub_api=FakeHub(hub.folder), max_chips=4, progress=False)
    assert src.kind == "hub" and "parquet shards unpacked" in src.note and src.has("s2rgbm-2020")
    ds = M3LEODataset(src.root, "conus", split=None, products=("s1grd-2020",), normalization=None, progress=False)
    assert len(ds) == 4


def test_local_miniset_folder_as_published_root_or_aoi_folder(hub, monkeypatch):
    prefix = PUBLISHED["conus"][0]
    root = hub.folder / "M3LEO-miniset"  # the repository as the Hub's own tools fetch it: root/conus/...
    assert (root / "conus" / prefix / "s1grd-2020").is_dir()
    src = resolve_data(str(root), SMOKE, progress=False)
    assert src.kind == "m3leo" and src.aois == ("conus",) and "resized" in src.note
    aoi_dir = resolve_data(str(root / "conus"), SMOKE, progress=False)
    assert aoi_dir.aois == ("conus",)
    monkeypatch.setenv(DATA_ENV, str(root))
    assert resolve_data("auto", SMOKE, progress=False).aois == ("conus",)


def test_own_geotiff_folder(tmp_path):
    make_folder(tmp_path / "gt", size=(64, 64))
    src = resolve_data(str(tmp_path / "gt"), SMOKE, progress=False)  # 16 px chips -> 32 px
    assert src.kind == "geotiff" and src.aois == ("mine",) and src.products == ("esaworldcover-2020", "s1grd-2020")
    assert "converted: 32 chips of 16 px" in src.note and "resized from 16 px" in src.note


def test_sim_and_bad_sources(tmp_path):
    src = resolve_data("auto", SMOKE, progress=False)
    assert src.kind == "sim" and src.aois == ("sim-a",) and src.run_name("mae") == "mae" and src.has("lcci-2020")
    with pytest.raises(FileNotFoundError, match="DATA folder '.*nowhere' does not exist"):
        resolve_data(str(tmp_path / "nowhere"), SMOKE)
    with pytest.raises(UserError, match="expected 'hub:M3LEO-miniset/<aoi>'"):
        resolve_data("hub:somebody/conus", SMOKE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither an M3LEO root"):
        resolve_data(str(tmp_path / "empty"), SMOKE)

"""A chapter run through papermill on real-layout data: ``DATA`` pointing at a miniset-shaped folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_hub import PUBLISHED, build_fake_hub  # noqa: E402

from sarssl.book import REPO_ROOT, execute_chapter  # noqa: E402


def _outputs(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))


@pytest.mark.chapter
def test_chapter3_runs_on_a_miniset_folder(tmp_path, monkeypatch):
    """``M3LEO-miniset/conus`` as published (``_miniset`` names, gssic/gunw/srtmdem folders, 16 px chips):
    the chapter resizes the chips to the smoke profile's 32 px and pretrains on them."""
    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "ws"))
    hub = build_fake_hub(tmp_path / "fake", aois=("conus",), n_chips=40, chip_size=16)
    folder = hub.folder / "M3LEO-miniset" / "conus"
    assert (folder / f"{PUBLISHED['conus'][0]}_miniset.geojson").is_file()
    out = tmp_path / "03.ipynb"
    execute_chapter(REPO_ROOT / "book/chapters/03_mae_pretraining.ipynb", out, profile="smoke",
                    parameters={"DATA": str(folder)})
    text = _outputs(out)
    assert "data (m3leo): M3LEO data in" in text and "chips resized from 16 px" in text
    assert "train chips," in text and "chips of 32 px" in text
    assert (tmp_path / "ws" / "runs" / "smoke").is_dir()
    assert any(p.name.startswith("mae-m3leo-") for p in (tmp_path / "ws" / "runs" / "smoke").iterdir())


@pytest.mark.chapter
def test_chapter5_runs_on_a_miniset_folder(tmp_path, monkeypatch):
    """Chapter 5 on a miniset-shaped folder: pretrains and sweeps on it (one AOI, so no out-of-region
    test), writes its sweep CSV and fine-tuned heads under the data source's run names."""
    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "ws"))
    hub = build_fake_hub(tmp_path / "fake", aois=("conus",), n_chips=40, chip_size=16)
    folder = hub.folder / "M3LEO-miniset" / "conus"
    out = tmp_path / "05.ipynb"
    execute_chapter(REPO_ROOT / "book/chapters/05_finetuning.ipynb", out, profile="smoke",
                    parameters={"DATA": str(folder)})
    text = _outputs(out)
    assert "data (m3leo): M3LEO data in" in text and "chips resized from 16 px" in text
    assert "no out-of-region test: the data holds one AOI ('conus')" in text
    runs = tmp_path / "ws" / "runs" / "smoke"
    names = {p.name for p in runs.iterdir()}
    assert {n.split("-m3leo-")[0] for n in names if "-m3leo-" in n} >= {"mae", "dino", "sweep"}
    assert "sweep" not in names  # the simulator's sweep folder: nothing ran on simulated data
    sweep = next(runs / n / "sweep.csv" for n in names if n.startswith("sweep-m3leo-"))
    assert sweep.is_file() and "region" in sweep.read_text().splitlines()[0]

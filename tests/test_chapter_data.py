"""A chapter run through papermill on real-layout data: ``DATA`` pointing at a miniset-shaped folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_hub import PUBLISHED, build_fake_hub  # noqa: E402

from sarssl.book import REPO_ROOT, execute_chapter  # noqa: E402
from sarssl.claims import claims_from_notebook  # noqa: E402


def _outputs(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))


def _run_on_miniset(tmp_path, monkeypatch, chapters, n_chips: int = 40) -> dict[str, Path]:
    """Run ``chapters`` (e.g. ``["03_mae_pretraining"]``) in ``smoke`` with ``DATA`` pointing at a fake
    ``M3LEO-miniset/conus`` of ``n_chips`` chips of 16 px, in one fresh workspace; returns name -> notebook."""
    monkeypatch.setenv("SARSSL_HOME", str(tmp_path / "ws"))
    hub = build_fake_hub(tmp_path / "fake", aois=("conus",), n_chips=n_chips, chip_size=16)
    folder = hub.folder / "M3LEO-miniset" / "conus"
    assert (folder / f"{PUBLISHED['conus'][0]}_miniset.geojson").is_file()
    out = {}
    for name in chapters:
        out[name] = tmp_path / f"{name}.ipynb"
        execute_chapter(REPO_ROOT / f"book/chapters/{name}.ipynb", out[name], profile="smoke",
                        parameters={"DATA": str(folder)})
    return out


@pytest.mark.chapter
def test_chapter3_runs_on_a_miniset_folder(tmp_path, monkeypatch):
    """``M3LEO-miniset/conus`` as published (``_miniset`` names, gssic/gunw/srtmdem folders, 16 px chips):
    the chapter resizes the chips to the smoke profile's 32 px and pretrains on them."""
    text = _outputs(_run_on_miniset(tmp_path, monkeypatch, ["03_mae_pretraining"])["03_mae_pretraining"])
    assert "data (m3leo): M3LEO data in" in text and "chips resized from 16 px" in text
    assert "train chips," in text and "chips of 32 px" in text
    assert (tmp_path / "ws" / "runs" / "smoke").is_dir()
    assert any(p.name.startswith("mae-m3leo-") for p in (tmp_path / "ws" / "runs" / "smoke").iterdir())


@pytest.mark.chapter
def test_chapter6_runs_on_a_miniset_folder(tmp_path, monkeypatch):
    """Chapter 6 on one miniset AOI: no CCI land cover (skipped with a note, never a crash), one AOI
    (the two-region and transfer sections skipped), and the land-cover claims recorded on WorldCover."""
    out = _run_on_miniset(tmp_path, monkeypatch, ["06_attention_maps"], n_chips=30)["06_attention_maps"]
    text = _outputs(out)
    assert "data (m3leo): M3LEO data in" in text and "conus: " in text
    assert "not in this data source, skipped below:" in text and "medium-res land cover" in text
    assert "holds one AOI: the comparison of two regions is skipped" in text
    assert "the transfer check is skipped" in text
    claims = [c["id"] for c in claims_from_notebook(out)]
    assert claims == ["dino_attention_landcover", "dino_attention_vs_brightness"]
    assert any(p.name.startswith("dino-m3leo-") for p in (tmp_path / "ws" / "runs" / "smoke").iterdir())


@pytest.mark.chapter
def test_chapters_2_and_4_run_on_a_miniset_folder(tmp_path, monkeypatch):
    """Chapters 2 and 4 on one miniset AOI: products the miniset lacks (CCI land cover) left out of the
    gallery with a note, no simulator record (wind events), DINO pretrained on the real-layout chips and
    its k-NN claim recorded on their WorldCover labels."""
    out = _run_on_miniset(tmp_path, monkeypatch, ["02_data", "04_dino_pretraining"])
    text2 = _outputs(out["02_data"])
    assert "data (m3leo): M3LEO data in" in text2
    assert "not in this data, so not shown: lcci-2020" in text2
    assert "real data: no declared wind events" in text2
    text4 = _outputs(out["04_dino_pretraining"])
    assert "data (m3leo): M3LEO data in" in text4 and "random encoders per seed:" in text4
    assert [c["id"] for c in claims_from_notebook(out["04_dino_pretraining"])] == ["dino_knn_landcover"]
    assert any(p.name.startswith("dino-m3leo-") for p in (tmp_path / "ws" / "runs" / "smoke").iterdir())


@pytest.mark.chapter
def test_chapter5_runs_on_a_miniset_folder(tmp_path, monkeypatch):
    """Chapter 5 on a miniset-shaped folder: pretrains and sweeps on it (one AOI, so no out-of-region
    test), writes its sweep CSV and fine-tuned heads under the data source's run names."""
    text = _outputs(_run_on_miniset(tmp_path, monkeypatch, ["05_finetuning"])["05_finetuning"])
    assert "data (m3leo): M3LEO data in" in text and "chips resized from 16 px" in text
    assert "no out-of-region test: the data holds one AOI ('conus')" in text
    runs = tmp_path / "ws" / "runs" / "smoke"
    names = {p.name for p in runs.iterdir()}
    assert {n.split("-m3leo-")[0] for n in names if "-m3leo-" in n} >= {"mae", "dino", "sweep"}
    assert "sweep" not in names  # the simulator's sweep folder: nothing ran on simulated data
    sweep = next(runs / n / "sweep.csv" for n in names if n.startswith("sweep-m3leo-"))
    assert sweep.is_file() and "region" in sweep.read_text().splitlines()[0]

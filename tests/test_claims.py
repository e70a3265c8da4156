"""Claims: recorded in a notebook, collected by the book, verdicts that follow the intervals."""

from __future__ import annotations

import json

import nbformat
import pytest

from sarssl.book import collect_claims, execute_chapter, stage_book
from sarssl.claims import CLAIM_MIME, claims_page, record_claim

KW = dict(chapter="4", statement="DINO k-NN land cover beats random encoders", metric="accuracy",
          higher_is_better=True, control="random-initialised encoders", study="DINO features carry land cover")


def test_verdict_follows_the_intervals():
    assert record_claim("a", value=0.9, ci=(0.88, 0.92), control_value=0.8, control_ci=(0.77, 0.83),
                        display=False, **KW).verdict == "holds"
    tie = record_claim("b", value=0.85, ci=(0.82, 0.88), control_value=0.866, control_ci=(0.84, 0.89),
                       display=False, **KW)
    assert tie.verdict.startswith("not shown") and tie.to_dict()["verdict"] == tie.verdict
    assert record_claim("c", value=0.7, ci=(0.68, 0.72), control_value=0.8, control_ci=(0.77, 0.83),
                        display=False, **KW).verdict == "reversed"
    paired = record_claim("d", value=0.85, ci=(0.82, 0.88), control_value=0.84, control_ci=(0.81, 0.87),
                          paired_ci=(0.004, 0.016), display=False, **KW)
    assert paired.verdict == "holds"
    lower = dict(KW, higher_is_better=False, metric="rmse")
    assert record_claim("e", value=3.0, ci=(2.8, 3.2), control_value=4.0, control_ci=(3.8, 4.2), display=False,
                        **lower).verdict == "holds"
    with pytest.raises(ValueError, match="ci must be"):
        record_claim("f", value=1.0, ci=(2.0, 1.0), control_value=0.0, control_ci=(0, 0), display=False, **KW)


def test_claims_travel_from_a_notebook_to_claims_json_and_the_page(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('PROFILE = "auto"')
    params.metadata["tags"] = ["parameters"]
    call = ("from sarssl.claims import record_claim\n"
            f"record_claim('dino_knn_landcover', value=0.9, ci=(0.88, 0.92), control_value=0.8, "
            f"control_ci=(0.77, 0.83), **{KW!r})")
    nb.cells = [params, nbformat.v4.new_code_cell(call)]
    src = tmp_path / "book" / "chapters" / "04_x.ipynb"
    src.parent.mkdir(parents=True)
    nbformat.write(nb, src)
    out = tmp_path / "out.ipynb"
    execute_chapter(src, out, profile="smoke")
    claims = collect_claims([out])
    assert [c["id"] for c in claims] == ["dino_knn_landcover"]
    c = claims[0]
    assert set(c) >= {"id", "chapter", "statement", "metric", "higher_is_better", "value", "ci", "control",
                      "control_value", "control_ci", "study"}
    assert c["ci"] == [0.88, 0.92] and c["verdict"] == "holds"
    page = claims_page(claims, "cpu")
    assert "0.9 [0.88, 0.92]" in page and "random-initialised encoders: 0.8 [0.77, 0.83]" in page and "| holds |" in page
    with pytest.raises(ValueError, match="recorded twice"):
        collect_claims([out, out])
    # the staged book carries the generated page
    for name in ("_config.yml", "_toc.yml"):
        (tmp_path / name).write_text((__import__("sarssl.book", fromlist=["REPO_ROOT"]).REPO_ROOT / name).read_text())
    stage = stage_book({"book/chapters/04_x": out}, tmp_path / "stage", root=tmp_path, profile="cpu")
    assert "dino_knn_landcover" in (stage / "book" / "claims.md").read_text()
    assert CLAIM_MIME in json.dumps(json.loads(out.read_text()))


def test_page_without_claims_says_so():
    assert "No chapter recorded a claim" in claims_page([], "smoke")

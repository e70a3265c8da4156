"""The book runner: a failing chapter names its cell, kernel chatter goes to a log, injected cells are hidden."""

from __future__ import annotations

import json

import nbformat
import pytest

from sarssl.book import ChapterError, _write_without_injected_parameters, execute_chapter, timing_table


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('PROFILE = "auto"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def test_failing_cell_is_named_and_kernel_output_is_logged(tmp_path):
    nb = _notebook(tmp_path / "ch.ipynb", "x = 1", "import sys; print('noise', file=sys.__stderr__)\nraise ValueError('bad band')")
    log = tmp_path / "logs" / "ch.log"
    with pytest.raises(ChapterError) as err:
        execute_chapter(nb, tmp_path / "out" / "ch.ipynb", profile="smoke", log_path=log)
    msg = str(err.value)
    assert "ch (smoke) failed in cell 3 (`import sys; print('noise'" in msg and "ValueError: bad band" in msg
    assert str(tmp_path / "out" / "ch.ipynb") in msg
    assert "noise" in log.read_text()  # the kernel's own stderr went to the log, not the terminal


def test_injected_parameters_cell_is_removed_from_the_page(tmp_path):
    nb = _notebook(tmp_path / "ch.ipynb", "print(PROFILE)")
    out = tmp_path / "ch_out.ipynb"
    execute_chapter(nb, out, profile="smoke")
    staged = tmp_path / "staged.ipynb"
    _write_without_injected_parameters(out, staged)
    cells = json.loads(staged.read_text())["cells"]
    injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0]["metadata"]["tags"]
    others = [c for c in cells if c not in injected]
    assert all("remove-cell" not in c["metadata"].get("tags", []) for c in others)
    assert "smoke" in "".join(cells[-1]["outputs"][0]["text"])


def test_timing_table_totals_what_ran():
    table = timing_table({"book/chapters/01_a": 120.0, "book/chapters/02_b": None, "book/chapters/03_c": 30.0}, "cpu")
    lines = table.splitlines()
    assert lines[1].split() == ["01_a", "2.0"] and lines[2].split() == ["02_b", "reused"]
    assert lines[-1].split() == ["total", "2.5"]


def test_timings_are_merged_per_profile_and_rendered(tmp_path):
    from sarssl.book import REPO_ROOT, record_timings, timings_markdown

    for name in ("_config.yml", "_toc.yml"):
        (tmp_path / name).write_text((REPO_ROOT / name).read_text())
    (tmp_path / "book").mkdir()
    record_timings({"book/chapters/01_a": 120.0, "book/chapters/02_b": 30.0}, "cpu", tmp_path)
    data = record_timings({"book/chapters/01_a": 90.0, "book/chapters/02_b": None}, "cpu", tmp_path)
    assert data["cpu"]["chapters"] == {"01_a": 1.5, "02_b": 0.5}  # the reused chapter keeps its time
    table = timings_markdown(data)
    assert "| 01_a | 1.5 |" in table and "| **whole book** | 2.0 |" in table
    assert "No build" in timings_markdown({})


def test_staged_book_carries_the_css(tmp_path):
    """The book's ``_static/`` CSS (100-column code cells) reaches the staged copy Jupyter Book builds."""
    from sarssl.book import REPO_ROOT, stage_book

    stage = stage_book({}, tmp_path / "stage", REPO_ROOT)
    css = (stage / "_static" / "sarssl.css").read_text()
    assert "div.highlight pre" in css and (stage / "_config.yml").is_file()

"""Every chapter: paired with its .ipynb, declares its papermill parameters, executes in the smoke profile.

The last test builds the whole book (strict: Sphinx warnings fail) from the notebooks executed here.
"""

from __future__ import annotations

import json
import re

import jupytext
import papermill
import pytest

from sarssl.book import REPO_ROOT, build_html, chapter_notebooks, execute_chapter, stage_book, toc_files

CHAPTERS = [p for p in chapter_notebooks()]
CHAPTER_IDS = [p.stem for p in CHAPTERS]


@pytest.fixture(scope="session")
def executed_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("executed")


@pytest.fixture(scope="session", autouse=True)
def chapter_workspace(tmp_path_factory):
    """One workspace for all chapters of the session, so later chapters reuse what earlier ones made."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SARSSL_HOME", str(tmp_path_factory.mktemp("sarssl_home")))
    yield
    mp.undo()


def test_toc_lists_chapters():
    files = toc_files()
    assert files[0] == "book/intro"
    assert CHAPTERS, "no chapter notebooks found from _toc.yml"
    for name in files:
        assert (REPO_ROOT / f"{name}.md").is_file(), f"{name}.md named in _toc.yml is missing"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=CHAPTER_IDS)
def test_chapter_is_paired(notebook):
    """The .ipynb holds exactly the cells of the MyST source (run `jupytext --sync` after editing)."""
    md = jupytext.read(notebook.with_suffix(".md"))
    nb = jupytext.read(notebook)
    assert nb.metadata.get("jupytext", {}).get("formats") == "ipynb,md:myst", f"{notebook.name} is not paired with md:myst"
    md_cells = [(c.cell_type, c.source.strip()) for c in md.cells]
    nb_cells = [(c.cell_type, c.source.strip()) for c in nb.cells]
    assert md_cells == nb_cells, f"{notebook.name} and its .md differ: run `jupytext --sync {notebook.with_suffix('.md')}`"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=CHAPTER_IDS)
def test_chapter_declares_parameters(notebook):
    params = papermill.inspect_notebook(str(notebook))
    assert "PROFILE" in params, f"{notebook.name}: no `parameters` cell defining PROFILE"
    assert json.loads(params["PROFILE"]["default"]) == "auto"
    if "DATA" in params:  # resolved by sarssl.workspace.resolve_data
        assert json.loads(params["DATA"]["default"]) == "auto", f"{notebook.name}: DATA should default to 'auto'"
    nb = jupytext.read(notebook)
    first_code = next(c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    assert "remove-cell" in first_code.metadata.get("tags", []) and "google.colab" in first_code.source, \
        f"{notebook.name}: the first code cell should be the hidden Colab setup cell"


@pytest.mark.chapter
@pytest.mark.parametrize("notebook", CHAPTERS, ids=CHAPTER_IDS)
def test_chapter_executes_smoke(notebook, executed_dir):
    name = notebook.relative_to(REPO_ROOT).with_suffix("").as_posix()
    seconds = execute_chapter(notebook, executed_dir / f"{name}.ipynb", profile="smoke")
    print(f"{notebook.stem}: {seconds:.1f} s in the smoke profile")


@pytest.mark.book
def test_book_builds_strict(executed_dir, tmp_path):
    """Stage the executed chapters and build the HTML book with warnings as errors."""
    executed = {}
    for notebook in CHAPTERS:
        name = notebook.relative_to(REPO_ROOT).with_suffix("").as_posix()
        out = executed_dir / f"{name}.ipynb"
        if not out.is_file():  # run alone (-k book): execute what the chapter tests did not
            execute_chapter(notebook, out, profile="smoke")
        executed[name] = out
    html = build_html(stage_book(executed, tmp_path / "staging"), tmp_path / "out", strict=True)
    assert (html / "index.html").is_file()
    for name in executed:
        page = html / f"{name}.html"
        assert page.is_file(), f"{page} was not built"
        links = re.findall(r'href="(https://colab\.research\.google\.com/github/[^"]+)"', page.read_text())
        assert links, f"{page.name} has no Colab launch button"
        for link in links:  # the button opens <repo>/blob/<branch>/<path>: that path must be in the repository
            path = link.split("/blob/", 1)[1].split("/", 1)[1]
            assert (REPO_ROOT / path).is_file(), f"{page.name}: the Colab button points at {path}, which does not exist"

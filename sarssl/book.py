"""Execute the book's chapters with papermill and build the HTML book with Jupyter Book 1.x.

The chapters' source of truth is the MyST markdown in ``book/chapters/``, paired by jupytext with
an ``.ipynb`` of the same name. ``sarssl book`` runs each paired notebook with papermill (injecting
``PROFILE``), collects the executed notebooks in a staging copy of the book, and builds that copy
with ``execute_notebooks: off``, so every number in the HTML comes from the run just made.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from sarssl.claims import claims_from_notebook, claims_page

REPO_ROOT = Path(__file__).resolve().parents[1]
CLAIMS_PAGE = "book/claims.md"  # generated into the staged book from the executed chapters
TIMINGS_FILE = "book/timings.json"  # minutes per chapter and profile, refreshed by every `sarssl book`
TIMINGS_MARKER = "<!-- chapter-times -->"  # where the intro shows them


def book_root(root: str | Path | None = None) -> Path:
    """The folder with ``_config.yml`` and ``_toc.yml`` (the repository root by default)."""
    root = Path(root) if root is not None else REPO_ROOT
    for name in ("_config.yml", "_toc.yml"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{name} not found in {str(root)!r}: run from a sarssl checkout")
    return root


def toc_files(root: str | Path | None = None) -> list[str]:
    """Every file named in ``_toc.yml`` (without extension), in reading order."""
    toc = yaml.safe_load((book_root(root) / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            for part in entry.get("parts", []):
                walk(part.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def chapter_notebooks(root: str | Path | None = None) -> list[Path]:
    """Paired ``.ipynb`` of every chapter in the table of contents, in reading order."""
    root = book_root(root)
    return [root / f"{f}.ipynb" for f in toc_files(root) if (root / f"{f}.ipynb").is_file()]


class ChapterError(RuntimeError):
    """A chapter failed: names the chapter, the failing cell, the error and where the log is."""


@contextlib.contextmanager
def _kernel_output_to(log_path: Path):
    """Send file descriptor 2 (where kernels write their start-up and shutdown chatter) to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def execute_chapter(notebook: str | Path, out_path: str | Path, profile: str = "cpu", cwd: str | Path | None = None,
                    log_path: str | Path | None = None, parameters: dict | None = None) -> float:
    """Run one chapter notebook with papermill, injecting ``PROFILE`` (and ``parameters``, e.g. ``{"DATA": ...}``);
    returns the seconds it took.

    With ``log_path``, the kernel's own console output (its TCP warning, shutdown messages) goes to that
    file instead of the terminal. A failing cell raises :class:`ChapterError` naming the chapter, the
    cell (its index and first line), the error and the executed notebook that holds the traceback.
    """
    import papermill as pm

    notebook, out_path = Path(notebook), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    quiet = _kernel_output_to(Path(log_path)) if log_path else contextlib.nullcontext()
    try:
        with quiet:
            pm.execute_notebook(
                str(notebook), str(out_path), parameters={"PROFILE": profile, **(parameters or {})}, kernel_name="python3",
                cwd=str(cwd or notebook.parent), progress_bar=False,
            )
    except pm.PapermillExecutionError as err:
        cell = err.source.strip().splitlines()[0] if err.source.strip() else ""
        raise ChapterError(
            f"{notebook.stem} ({profile}) failed in cell {err.cell_index} (`{cell[:80]}`): {err.ename}: {err.evalue}\n"
            f"  the executed notebook with the traceback: {out_path}") from err
    return time.perf_counter() - start


def stage_book(executed: dict[str, Path], stage_dir: str | Path, root: str | Path | None = None,
               profile: str = "smoke") -> Path:
    """Copy the book's config and pages into ``stage_dir``, with executed notebooks in place of chapters.

    The claims page (:data:`CLAIMS_PAGE`) is generated from the claims the executed chapters recorded.

    Args:
        executed: toc file (e.g. ``"book/chapters/02_data"``) -> executed ``.ipynb``.
    """
    root, stage = book_root(root), Path(stage_dir)
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml", "references.bib"):
        if (root / name).is_file():
            shutil.copy2(root / name, stage / name)
    if (root / "_static").is_dir():  # the book's CSS, picked up by Jupyter Book from _static/
        shutil.copytree(root / "_static", stage / "_static")
    for path in (root / "book").rglob("*"):
        rel = path.relative_to(root)
        if path.is_dir() or "_build" in rel.parts or ".ipynb_checkpoints" in rel.parts:
            continue
        if path.suffix in (".md", ".ipynb") and rel.with_suffix("").as_posix() in executed:
            continue
        if path.suffix == ".ipynb":  # unexecuted pairs would clash with their .md twin
            continue
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, stage / rel)
    for name, nb in executed.items():
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        _write_without_injected_parameters(Path(nb), stage / f"{name}.ipynb")
    claims = collect_claims(executed.values())
    (stage / CLAIMS_PAGE).write_text(claims_page(claims, profile))
    intro = stage / f"{toc_files(root)[0]}.md"
    if intro.is_file() and TIMINGS_MARKER in intro.read_text():
        timings = json.loads((root / TIMINGS_FILE).read_text()) if (root / TIMINGS_FILE).is_file() else {}
        intro.write_text(intro.read_text().replace(TIMINGS_MARKER, timings_markdown(timings)))
    return stage


def record_timings(seconds: dict[str, float | None], profile: str, root: str | Path | None = None) -> dict:
    """Merge this build's seconds per chapter into :data:`TIMINGS_FILE` (chapters reused keep their time)."""
    path = book_root(root) / TIMINGS_FILE
    data = json.loads(path.read_text()) if path.is_file() else {}
    entry = data.get(profile, {"chapters": {}})
    for name, t in seconds.items():
        if t is not None:
            entry["chapters"][Path(name).name] = round(t / 60, 1)
    entry.update(cores=os.cpu_count(), date=time.strftime("%Y-%m-%d"))
    data[profile] = entry
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def timings_markdown(timings: dict) -> str:
    """A markdown table: one row per chapter, one column per profile measured (minutes)."""
    profiles = [p for p in ("smoke", "cpu", "gpu", "paper") if p in timings]
    if not profiles:
        return "*No build has recorded chapter times yet: `sarssl book` writes them.*"
    chapters = sorted({c for p in profiles for c in timings[p]["chapters"]})
    head = [f"`{p}` (min, {timings[p].get('cores', '?')} cores, {timings[p].get('date', '?')})" for p in profiles]
    lines = ["| chapter | " + " | ".join(head) + " |", "|---" * (len(profiles) + 1) + "|"]
    for c in chapters:
        cells = [str(timings[p]["chapters"].get(c, "–")) for p in profiles]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    totals = [f"{sum(timings[p]['chapters'].values()):.1f}" for p in profiles]
    lines.append("| **whole book** | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def collect_claims(notebooks) -> list[dict]:
    """The claims recorded by the executed chapters, in reading order (ids unique)."""
    claims, seen = [], {}
    for nb in notebooks:
        for c in claims_from_notebook(nb):
            if c["id"] in seen:
                raise ValueError(f"claim id {c['id']!r} recorded twice ({seen[c['id']]} and {nb})")
            seen[c["id"]] = nb
            claims.append(c)
    return claims


def _write_without_injected_parameters(src: Path, dst: Path) -> None:
    """Copy an executed notebook, tagging papermill's injected ``# Parameters`` cell ``remove-cell``."""
    nb = json.loads(src.read_text())
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell["metadata"]["tags"] = tags + ["remove-cell"]
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False))


def build_html(stage_dir: str | Path, out_dir: str | Path, strict: bool = True) -> Path:
    """Build the staged book with Jupyter Book; returns the folder holding ``index.html``.

    With ``strict``, Sphinx warnings are errors (``-W -n --keep-going``).
    """
    stage_dir, out_dir = Path(stage_dir), Path(out_dir)
    jb_out = out_dir / "jb"
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(stage_dir), "--path-output", str(jb_out), "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    html = out_dir / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(jb_out / "_build" / "html", html)
    shutil.rmtree(jb_out, ignore_errors=True)
    return html


def build_book(profile: str = "cpu", out_dir: str | Path = "_build", root: str | Path | None = None,
               strict: bool = True, reuse_executed: bool = False, progress: bool = True) -> Path:
    """Execute every chapter with ``profile`` and build the HTML book into ``<out_dir>/html``.

    Executed notebooks are kept in ``<out_dir>/executed/<profile>/``, each kernel's console output in
    ``<out_dir>/logs/<profile>/``, the seconds per chapter in ``<out_dir>/timings-<profile>.json`` and the
    chapters' recorded claims in ``<out_dir>/claims.json`` (also rendered as the book's claims page);
    with ``reuse_executed`` a chapter whose executed copy is newer than its source is not run again.
    One progress bar names the chapter running and the elapsed time; a table of times ends the run.
    """
    from tqdm.auto import tqdm

    root, out_dir = book_root(root), Path(out_dir).resolve()
    exec_dir, log_dir = out_dir / "executed" / profile, out_dir / "logs" / profile
    executed, seconds = {}, {}
    chapters = [f for f in toc_files(root) if (root / f"{f}.ipynb").is_file()]
    bar = tqdm(chapters, desc=f"book ({profile})", unit="chapter", disable=not progress,
               bar_format="{desc}: {n_fmt}/{total_fmt} chapters |{bar}| {elapsed} elapsed{postfix}")
    for name in bar:
        src, dst = root / f"{name}.ipynb", exec_dir / f"{name}.ipynb"
        bar.set_postfix_str(Path(name).name)
        if reuse_executed and dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
            seconds[name] = None
        else:
            seconds[name] = execute_chapter(src, dst, profile=profile, cwd=src.parent,
                                            log_path=log_dir / f"{Path(name).name}.log")
        executed[name] = dst
    bar.close()
    (out_dir / f"timings-{profile}.json").write_text(json.dumps(
        {Path(n).name: (round(t, 1) if t is not None else None) for n, t in seconds.items()}, indent=2))
    (out_dir / "claims.json").write_text(json.dumps(collect_claims(executed.values()), indent=2))
    record_timings(seconds, profile, root)
    if progress:
        print(timing_table(seconds, profile))
    stage = stage_book(executed, out_dir / "staging", root, profile=profile)
    return build_html(stage, out_dir, strict=strict)


def timing_table(seconds: dict[str, float | None], profile: str) -> str:
    """A plain-text table of minutes per chapter (``None``: reused, not run) and the total."""
    width = max(len(Path(n).name) for n in seconds) if seconds else 10
    lines = [f"{'chapter':<{width}}  {profile + ' (min)':>10}"]
    for name, t in seconds.items():
        lines.append(f"{Path(name).name:<{width}}  {('reused' if t is None else f'{t / 60:.1f}'):>10}")
    ran = [t for t in seconds.values() if t is not None]
    lines.append(f"{'total':<{width}}  {sum(ran) / 60:>10.1f}")
    return "\n".join(lines)

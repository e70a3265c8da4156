"""Layers: every module under ``sarssl/`` imports only from its own layer or those below it, and no
two modules import each other, directly or round a loop.

The checker parses the source with :mod:`ast` (nothing is imported), so imports inside functions
and methods count exactly as top-level ones do; relative imports are resolved against the
importing module, ``from pkg import name`` points at the submodule ``pkg.name`` when there is one,
and ``importlib.import_module("...")`` calls with a literal name count too. Cycles are looked for
in the module-level graph (an edge per importing module and imported module; a package's
``__init__`` is a module of its own, importing a submodule does not add an edge to its parent).
The layers are those of ARCHITECTURE.md and /work/shared/DESIGN.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Layer of each top-level piece of the package (a module or a subpackage with everything in it).
LAYERS = {
    "sarssl": 0,  # the package's own __init__ (exact name only)
    "sarssl.profiles": 0,
    "sarssl.paths": 0,
    "sarssl.errors": 0,
    "sarssl.evidence": 0,  # statistics only (numpy/scipy): intervals and the rule for "better"
    "sarssl.data": 1,
    "sarssl.preprocess": 1,
    "sarssl.models": 2,
    "sarssl.train": 3,
    "sarssl.analysis": 4,
    "sarssl.plots": 4,
    "sarssl.workspace": 5,
    "sarssl.book": 5,
    "sarssl.claims": 5,
    "sarssl.export": 5,
    "sarssl.cli": 5,
}


# ------------------------------------------------------------------------------------------------
# the checker
# ------------------------------------------------------------------------------------------------
def package_modules(src_root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` under ``src_root`` (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted((src_root / package).rglob("*.py")):
        parts = path.relative_to(src_root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules) -> str:
    """The longest prefix of dotted ``name`` that is a module of the package (``name`` when none is)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return name


def module_imports(module: str, path: Path, modules, package: str) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of ``package`` anywhere in ``path`` (functions included)."""
    is_pkg = path.name == "__init__.py"
    here = module.split(".") if is_pkg else module.split(".")[:-1]  # the package relative imports start from
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                names.append(sub if sub in modules else base)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            names = [node.args[0].value]
        for name in names:
            if name == package or name.startswith(package + "."):
                found.append((_resolve(name, modules), node.lineno))
    return found


def import_graph(src_root: Path, package: str) -> tuple[dict[str, Path], dict[str, list[tuple[str, int]]]]:
    """The package's modules and, per module, the package modules it imports (with line numbers)."""
    modules = package_modules(src_root, package)
    return modules, {m: module_imports(m, p, modules, package) for m, p in modules.items()}


def layer_of(module: str, layers: dict[str, int], package: str) -> int | None:
    """Layer of ``module``: the entry of its longest mapped prefix (the bare package name maps only itself)."""
    best, best_len = None, -1
    for key, layer in layers.items():
        matches = module == key or (key != package and module.startswith(key + "."))
        if matches and len(key) > best_len:
            best, best_len = layer, len(key)
    return best


def find_cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Each import cycle as a closed path ``[a, b, ..., a]``: one per strongly connected component of 2+ modules."""
    adj = {m: sorted({t for t, _ in edges if t in graph and t != m}) for m, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adj[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(adj):
        if v not in index:
            strongconnect(v)
    cycles = []
    for comp in sorted(sccs):
        start, inside = comp[0], set(comp)
        prev: dict[str, str] = {}
        frontier, seen = [start], {start}
        while frontier and start not in prev:  # breadth-first back to start, inside the component
            nxt = []
            for v in frontier:
                for w in adj[v]:
                    if w in inside and w == start and start not in prev:
                        prev[start] = v
                    elif w in inside and w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        path, v = [start], prev[start]
        while v != start:
            path.append(v)
            v = prev[v]
        path.append(start)
        cycles.append(path[::-1])
    return cycles


def layer_problems(src_root: Path, package: str, layers: dict[str, int]) -> list[str]:
    """Every unmapped module, upward import and import cycle of ``package``, one message each."""
    modules, graph = import_graph(src_root, package)
    problems = []
    for m, path in modules.items():
        if layer_of(m, layers, package) is None:
            problems.append(f"unmapped module: {m} ({path.relative_to(src_root)}) has no layer in LAYERS")
    for m, edges in graph.items():
        lm = layer_of(m, layers, package)
        for target, line in sorted(set(edges)):
            lt = layer_of(target, layers, package)
            if lm is not None and lt is not None and lt > lm:
                problems.append(f"upward import: {m} (layer {lm}) imports {target} (layer {lt}) "
                                f"at {modules[m].relative_to(src_root)}:{line}")
    for cycle in find_cycles(graph):
        problems.append("import cycle: " + " -> ".join(cycle))
    return problems


# ------------------------------------------------------------------------------------------------
# the package
# ------------------------------------------------------------------------------------------------
def test_sarssl_layers():
    modules, graph = import_graph(REPO, "sarssl")
    # the checker sees the package (guards against passing on an empty or misparsed tree)
    assert "sarssl.models.dino" in modules and "sarssl.cli" in modules
    assert "sarssl.models.vit" in {t for t, _ in graph["sarssl.models.dino"]}  # a function-level import
    problems = layer_problems(REPO, "sarssl", LAYERS)
    assert not problems, f"{len(problems)} layering problem(s):\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------------------
# the checker itself, on a toy package
# ------------------------------------------------------------------------------------------------
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


TOY_LAYERS = {"toy": 0, "toy.base": 0, "toy.low": 1, "toy.high": 2}


def test_checker_reports_upward_import_cycle_and_unmapped(tmp_path):
    _write(tmp_path, {
        "toy/__init__.py": "",
        "toy/base.py": "import math\n",
        "toy/low/__init__.py": "",
        # an upward import hidden inside a function, closing a cycle with high.b
        "toy/low/a.py": "from toy import base\n\ndef f():\n    from toy.high import b\n    return b\n",
        "toy/high/__init__.py": "",
        "toy/high/b.py": "from ..low import a\n",  # relative: toy.low.a
        # a cycle inside one layer, through `from . import name` and importlib
        "toy/high/c.py": "from . import d\n",
        "toy/high/d.py": "import importlib\n\ndef g():\n    return importlib.import_module('toy.high.c')\n",
        "toy/stray.py": "from toy.base import math\n",
    })
    problems = layer_problems(tmp_path, "toy", TOY_LAYERS)
    assert sorted(problems) == sorted([
        "unmapped module: toy.stray (toy/stray.py) has no layer in LAYERS",
        "upward import: toy.low.a (layer 1) imports toy.high.b (layer 2) at toy/low/a.py:4",
        "import cycle: toy.high.b -> toy.low.a -> toy.high.b",
        "import cycle: toy.high.c -> toy.high.d -> toy.high.c",
    ])


def test_checker_passes_a_clean_package(tmp_path):
    _write(tmp_path, {
        "toy/__init__.py": "",
        "toy/base.py": "",
        "toy/low/__init__.py": "from toy.low.a import f\n",  # a package re-exporting its submodule
        "toy/low/a.py": "from toy import base\nfrom toy.low import e\n\ndef f():\n    import toy.base\n",
        "toy/low/e.py": "import os\n",
        "toy/high/__init__.py": "",
        "toy/high/b.py": "from ..low import a\nfrom toy.base import x\nimport toy.low.e as e\n",
    })
    assert layer_problems(tmp_path, "toy", TOY_LAYERS) == []
    _, graph = import_graph(tmp_path, "toy")
    assert sorted(t for t, _ in graph["toy.high.b"]) == ["toy.base", "toy.low.a", "toy.low.e"]
    assert sorted(t for t, _ in graph["toy.low.a"]) == ["toy.base", "toy.base", "toy.low.e"]

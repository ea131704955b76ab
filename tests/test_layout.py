"""The layout's rules, checked on the import statements of every module (issue 11):

1. imports run downward only: train -> families -> models, data -> core;
2. a family never imports another family;
3. no import circle among module-level imports;
4. every family is one folder with a `FAMILY` in the one explicit list, and mypy-visible types.

The checker is tested on a fixture tree with one upward import, one cross-family import and one circle, so
a green run means it would have caught them.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

LAYERS = {"core": 0, "data": 1, "models": 1, "families": 2, "train": 3}


def _modname(root: Path, f: Path) -> str:
    parts = list(f.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["vislab", *parts])


def _imports(f: Path) -> list[tuple[int, str, list[str], bool]]:
    """(line, imported vislab module, the modules it may name, at module level) per import of `f`."""
    tree = ast.parse(f.read_text())
    top = {id(n) for n in tree.body}
    # `if TYPE_CHECKING:` blocks at module level count as module level
    for n in tree.body:
        if isinstance(n, ast.If):
            top |= {id(m) for m in n.body}
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [(n.lineno, a.name, [a.name], id(n) in top) for a in n.names if a.name.startswith("vislab.")]
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0 and n.module.startswith("vislab."):
            # `from vislab.x import y`: y is a module or a name in vislab.x
            out.append((n.lineno, n.module, [n.module] + [f"{n.module}.{a.name}" for a in n.names], id(n) in top))
    return out


def _sources(root: Path) -> list[Path]:
    return [f for f in sorted(root.rglob("*.py")) if f.relative_to(root).parts[0] in LAYERS]


def layout_problems(root: Path) -> list[str]:
    """Every upward import, cross-family import and import circle in the tree at `root`."""
    problems = []
    modules = {_modname(root, f): f for f in _sources(root)}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, f in modules.items():
        here = mod.split(".")
        for line, name, targets, top in _imports(f):
            there = name.split(".")
            if len(there) < 2 or there[1] not in LAYERS:
                continue
            where = f"{f.relative_to(root)}:{line} imports {name}"
            if LAYERS[there[1]] > LAYERS[here[1]]:
                problems.append(f"upward: {where}")
            if here[1] == there[1] == "families" and len(here) > 2 and len(there) > 2 and here[2] != there[2]:
                problems.append(f"across families: {where}")
            if top:
                graph[mod] |= {t for t in targets if t in modules and t != mod}
    problems += [f"import circle: {' -> '.join(c)}" for c in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_catches_upward_cross_family_and_circular_imports(tmp_path: Path) -> None:
    files = {
        "core/errors.py": "",
        "data/manifest.py": "from vislab.train.run import fit\n",                     # upward
        "families/spikes/infer.py": "from vislab.families.v1 import schema\n",          # across families
        "families/v1/schema.py": "from vislab.core.errors import ConfigError\n",       # fine
        "models/a.py": "from vislab.models.b import x\n",
        "models/b.py": "def f():\n    from vislab.train import cli\nfrom vislab.models.a import y\n",  # circle + upward
        "train/run.py": "from vislab.families.v1.schema import V1Config\n",            # fine
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    problems = layout_problems(tmp_path)
    assert any(p.startswith("upward: data/manifest.py:1") for p in problems), problems
    assert any(p.startswith("upward: models/b.py:2") for p in problems), problems  # in a function too
    assert any(p.startswith("across families: families/spikes/infer.py:1") for p in problems), problems
    assert "import circle: vislab.models.a -> vislab.models.b" in problems, problems
    assert len(problems) == 4, problems


def test_vislab_imports_run_downward_only() -> None:
    assert layout_problems(REPO) == []


def test_every_family_is_one_folder_in_the_list() -> None:
    from vislab.models.family import Family
    from vislab.train.families import FAMILIES

    folders = sorted(p.name for p in (REPO / "families").iterdir() if (p / "__init__.py").is_file())
    assert sorted(FAMILIES) == folders
    for name, family in FAMILIES.items():
        assert isinstance(family, Family) and family.name == name
        assert family.monitor_mode in ("min", "max")
        assert (REPO / "tests" / name).is_dir(), f"tests/{name}/ mirrors families/{name}/"


@pytest.mark.parametrize("layer", ["core", "data", "models"])
def test_lower_layers_know_no_family_by_name(layer: str) -> None:
    """Exports name builders, not module paths: nothing below families/ spells a family's module path
    (the alias table of builder strings written before the move is the one exception)."""
    hits = []
    for f in sorted((REPO / layer).rglob("*.py")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if "vislab.families" in line and "ALIASES" not in line and not line.strip().startswith('"vislab.models.'):
                hits.append(f"{f.relative_to(REPO)}:{i}: {line.strip()}")
    assert hits == []

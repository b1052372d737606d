"""The house's rules (docs/architecture.md), checked on the code's own imports.

- the import-linter contracts in pyproject.toml pass (layers; models and layers never import
  TensorFlow, JAX or torch), and a module of ``models`` that imports ``data`` breaks them;
- no import cycles between modules, lazy imports included;
- no module imports another module's ``_private`` name;
- at most five modules at the top of ``lmlab/`` besides ``__init__`` and ``__main__``.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lmlab"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, '.'); "
                           "from importlinter.cli import lint_imports_command; lint_imports_command()", "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_import_contracts_catch_a_model_that_imports_data(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "lmlab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    rnn = tmp_path / "lmlab" / "models" / "rnn.py"
    rnn.write_text(rnn.read_text() + "\n\ndef _windows():\n    from lmlab.data.windows import RandomWindows\n"
                   "    return RandomWindows\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "lmlab.models is not allowed to import lmlab.data" in result.stdout
    assert "lmlab.models.rnn -> lmlab.data.windows" in result.stdout


def module_graph() -> grimp.ImportGraph:
    return grimp.build_graph("lmlab", cache_dir=None)


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm over module-to-module imports: each component of more than one module is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str):
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles():
    graph = module_graph()
    # A package's __init__ re-exporting its own modules is not a cycle of jobs: leave those edges out.
    for module in sorted(graph.modules):
        for imported in list(graph.find_modules_directly_imported_by(module)):
            if imported.startswith(module + "."):
                graph.remove_import(importer=module, imported=imported)
    assert strongly_connected(graph) == []


def test_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.y", imported="a.z")
    assert strongly_connected(graph) == [["a.x", "a.y"]]


def library_modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def private_imports(path: Path) -> list[str]:
    """``from lmlab.x import _name`` and ``lmlab_module._name`` uses, as 'file:line name'."""
    tree = ast.parse(path.read_text(), str(path))
    found, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmlab"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}")
                else:
                    aliases.add(alias.asname or alias.name)  # may be a module: from lmlab.x import y
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lmlab") and alias.asname:
                    aliases.add(alias.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    assert [hit for path in library_modules() for hit in private_imports(path)] == []


def test_private_name_check_catches_one(tmp_path):
    path = ROOT / "tests" / "_private_probe.py"
    try:
        path.write_text("from lmlab.core.io import _fsync_dir\nfrom lmlab.runs import checkpoint\n"
                        "checkpoint._save_tensors\n")
        assert len(private_imports(path)) == 2
    finally:
        path.unlink()


def test_package_root_holds_few_modules():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(loose) <= 5, loose

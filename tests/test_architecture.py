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


# ---------------------------------------------------------------- imports at the top

HEAVY = {"keras", "tensorflow", "jax", "torch", "transformers", "datasets", "pyarrow", "matplotlib", "sacrebleu",
         "jieba", "safetensors", "tokenizers", "mwparserfromhell", "yaml", "tqdm"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node, known: set[str]) -> list[str]:
    """The modules an import statement loads (``from lmlab.x import y`` loads ``lmlab.x.y`` when that is one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not node.module or node.level:
        return []
    found = [node.module]
    found += [f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known]
    return found


def import_map():
    """Per lmlab module: (modules imported at module level, (line, module) imported inside functions)."""
    paths = {module_name(p): p for p in library_modules()}
    top, lazy = {}, {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        top[name], lazy[name] = set(), []
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        lazy[name].extend((inner.lineno, m) for m in imported_modules(inner, set(paths)))
        for node in tree.body:  # module level, including under `if`/`try`
            for inner in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    top[name].update(imported_modules(inner, set(paths)))
    return paths, top, lazy


def heavy_modules(paths, top) -> set[str]:
    """lmlab modules whose import loads a heavy third-party package (through module-level imports)."""
    heavy = set()
    changed = True
    while changed:
        changed = False
        for name in paths:
            if name in heavy:
                continue
            loads = set(top[name])
            loads.update(".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1))  # parent packages
            if any(m.split(".")[0] in HEAVY or m in heavy for m in loads):
                heavy.add(name)
                changed = True
    return heavy


def test_lmlab_imports_inside_functions_are_only_of_heavy_modules():
    """Imports are at the top of library modules, so the dependency graph can be read there; an import
    inside a function is kept only where it loads a heavy package (Keras, TensorFlow, ...) that
    ``import lmlab`` and light commands must not pay for. ``cli/`` may import lazily (start-up time)."""
    paths, top, lazy = import_map()
    heavy = heavy_modules(paths, top)
    light_lazy = [f"{paths[name].relative_to(ROOT)}:{line} {module}" for name in sorted(paths)
                  if not name.startswith("lmlab.cli") for line, module in lazy[name]
                  if module.startswith("lmlab") and module in paths and module not in heavy
                  and (name, module) not in BACKEND_CHOICES]
    assert light_lazy == []


# A package that picks one implementation per Keras backend at run time imports it there (the
# implementations import the package back, and each is only usable under its own backend).
BACKEND_CHOICES = {("lmlab.training.distribute", "lmlab.training.distribute.tf_strategy"),
                   ("lmlab.training.distribute", "lmlab.training.distribute.jax_mesh")}


def test_lazy_import_check_catches_one(tmp_path, monkeypatch):
    package = tmp_path / "lmlab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "light.py").write_text("X = 1\n")
    (package / "user.py").write_text("def f():\n    from lmlab.light import X\n    return X\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    paths, top, lazy = import_map()
    assert lazy["lmlab.user"] == [(2, "lmlab.light")]
    assert "lmlab.light" not in heavy_modules(paths, top)


def test_import_lmlab_loads_nothing_heavy():
    code = ("import sys, lmlab, lmlab.data, lmlab.tokenizers, lmlab.experiments, lmlab.tasks; "
            f"print(sorted(m for m in {sorted(HEAVY - {'tqdm', 'yaml', 'tokenizers', 'safetensors', 'jieba', 'mwparserfromhell'})!r} "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

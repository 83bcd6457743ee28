"""The shape of the package, checked: imports go down the flow, no cycles, small modules, light import.

The folders of ``snrmoe_lib`` are layers, lowest first (:data:`LAYERS`). A module may import its own
folder and the folders below it, never one above: every ``import`` counts, also those inside
functions. Each test lists every violation it finds, with the file and line.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT

PACKAGE = "snrmoe_lib"
PACKAGE_DIR = ROOT / PACKAGE
#: The folders of the package in the order of the flow: a module imports only from its own or lower ones.
LAYERS = ("_util", "config", "data", "features", "models", "ceiling", "evaluation", "analyses", "reporting",
          "orchestration")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
#: Third-party packages ``import snrmoe_lib`` must not load (they load inside the functions that need them).
HEAVY = ("torch", "matplotlib", "papermill", "nbconvert", "sklearn", "distributed", "dask")


@dataclass(frozen=True)
class Import:
    source: str  # importing module (dotted name)
    target: str  # imported module (dotted name)
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module ``name`` refers to (the longest known prefix), or None outside the package."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of the package by ``module``, at any depth (functions included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` names the submodule when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules) if name.split(".")[0] == PACKAGE else None
            if target is not None and target != module:
                out.append(Import(module, target, node.lineno))
    return out


def _all_imports() -> list[Import]:
    modules = _modules()
    return list(dict.fromkeys(imp for m, p in modules.items() for imp in _imports(m, p, modules)))


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package itself: its __init__ re-exports from every layer
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def _rel(module: str) -> str:
    return str(_modules()[module].relative_to(ROOT))


def upward_imports() -> list[str]:
    bad = []
    for imp in _all_imports():
        if imp.source == PACKAGE:
            continue  # the package __init__ re-exports what notebooks use
        src, dst = _layer(imp.source), _layer(imp.target)
        if dst is None:
            bad.append(f"{_rel(imp.source)}:{imp.line} imports the package root {imp.target}")
        elif src is None or dst > src:
            bad.append(f"{_rel(imp.source)}:{imp.line} ({LAYERS[src] if src is not None else '?'}) imports "
                       f"{imp.target} ({LAYERS[dst]}), a higher folder")
    return bad


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {m: set() for m in _modules()}
    for imp in _all_imports():
        graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def oversized() -> list[str]:
    bad = []
    for module, path in _modules().items():
        text = path.read_text()
        n_lines = len(text.splitlines())
        rel = path.relative_to(ROOT)
        if n_lines > MAX_MODULE_LINES:
            bad.append(f"{rel}: {n_lines} lines (module limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    bad.append(f"{rel}:{node.lineno} {node.name}: {length} lines (function limit {MAX_FUNCTION_LINES})")
    return bad


def _report(title: str, items: list[str]) -> str:
    return f"{len(items)} {title}:\n  " + "\n  ".join(items)


def test_the_scan_sees_the_package():
    imports = _all_imports()
    assert len(_modules()) > 20
    assert any(i.source == "snrmoe_lib.data.io" and i.target == "snrmoe_lib.data.writers" for i in imports)
    assert set(LAYERS) <= {m.split(".")[1] for m in _modules() if m.count(".") >= 1}


def test_imports_only_go_down_the_flow():
    bad = upward_imports()
    assert not bad, _report("import(s) from a higher folder (order: " + " → ".join(LAYERS) + ")", bad)


def test_no_import_cycles():
    groups = import_cycles()
    assert not groups, _report("import cycle(s)", [" ↔ ".join(g) for g in groups])


def test_modules_and_functions_are_small():
    bad = oversized()
    assert not bad, _report("module(s) or function(s) over the limit", bad)


def test_importing_the_package_stays_light():
    code = f"import sys, {PACKAGE}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = out.stdout.split()
    assert not loaded, f"`import {PACKAGE}` loads {loaded}; import them inside the functions that need them"


#: The package imports that stay inside a function, each with the reason it cannot be hoisted to the top
#: of its module; every other package import is at module level, where a reader sees it.
DEFERRED_IMPORTS = {
    ("snrmoe_lib", "snrmoe_lib.models.deployed"): "`import snrmoe_lib` stays light; load_model loads on use",
    ("snrmoe_lib.models.neural.estimator", "snrmoe_lib.models.neural.nets"): "nets imports torch at its top",
    ("snrmoe_lib.orchestration.cli", "snrmoe_lib.analyses.deploy"): "only `snrmoe fit` needs the analyses; "
                                                                     "every other command starts faster",
    ("snrmoe_lib.orchestration.cli", "snrmoe_lib.config"): "`snrmoe fit` only",
    ("snrmoe_lib.orchestration.cli", "snrmoe_lib.data.mock"): "`snrmoe fit` only",
    ("snrmoe_lib.orchestration.cli", "snrmoe_lib.reporting.model_card"): "`snrmoe fit` only",
    ("snrmoe_lib.orchestration.cli", "snrmoe_lib.orchestration.predict"): "`snrmoe predict` only",
}


def deferred_imports() -> list[str]:
    modules = _modules()
    bad = []
    for module, path in modules.items():
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                for name in names:
                    target = _resolve(name, modules)
                    if target and (module, target) not in DEFERRED_IMPORTS:
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {fn.name}: import {target}")
    return bad


def test_package_imports_are_at_module_level_unless_a_reason_is_given():
    bad = deferred_imports()
    assert not bad, _report("package import(s) inside a function without a reason in DEFERRED_IMPORTS "
                            "(hoist them, or give the reason)", bad)

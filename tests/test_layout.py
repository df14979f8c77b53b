"""The package's layout: every module imports on its own, and no two modules import each
other, directly or around a circle (lazy imports inside functions count too)."""
from __future__ import annotations

import ast
import subprocess

import pytest

from train_support import PYTHON, ROOT, subprocess_env

PACKAGE = ROOT / "alexnet_triton"
KERNELS = ROOT / "kernels"  # installed as alexnet_triton.kernels


def _modules() -> dict:
    """{dotted module name: source path} of the whole installed package."""
    found = {}
    for base, prefix in ((PACKAGE, "alexnet_triton"), (KERNELS, "alexnet_triton.kernels")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


def _imports(name: str, path, modules: dict) -> set:
    """The package's modules that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(modules)
            targets.update(submodules or {base})  # from pkg import module: that module
    return {target for target in targets if target in modules and target != name}


def test_no_module_imports_itself_around_a_circle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how a package re-exports.
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    state, stack = {}, []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                circle = stack[stack.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_layers_import_only_downwards():
    """errors and runtime are leaves under everything; the CLIs are imported by nothing."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["alexnet_triton.errors"] == set()
    assert graph["alexnet_triton.runtime"] <= {"alexnet_triton.errors", "alexnet_triton.functional"}
    clis = {f"alexnet_triton.{cli}" for cli in ("train", "evaluate", "predict", "prepare",
                                                 "neighbours", "__main__")}
    for name, targets in graph.items():
        assert not targets & clis, (name, targets & clis)


def test_every_module_imports_in_a_fresh_interpreter():
    """Every module, in a fresh interpreter (one for all: one each would take minutes on 2
    cores), then each command line started on its own."""
    names = sorted(_modules())
    script = "\n".join(["import importlib, sys",
                        "for name in sys.argv[1:]:",
                        "    importlib.import_module(name)"])
    result = subprocess.run([PYTHON, "-c", script, *names], cwd=ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for cli in ("train", "evaluate", "predict", "prepare", "neighbours"):  # and each alone
        result = subprocess.run([PYTHON, "-m", f"alexnet_triton.{cli}", "--help"], cwd=ROOT,
                                env=subprocess_env(), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0 and "usage:" in result.stdout, (cli, result.stderr)

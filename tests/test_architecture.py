"""The package's layers (docs/architecture.md): every import of a jaxcnn module --
top-level or inside a function -- points to a strictly lower layer (or within its own
package), the module graph has no cycle, importing any module reads no file, and
``import jaxcnn`` lists the public packages without importing jax."""
import ast
import os
import pathlib
import subprocess
import sys

import jaxcnn

ROOT = pathlib.Path(jaxcnn.__file__).parent

# package (first component under jaxcnn) -> layer; an import must go strictly down,
# so packages on one layer never import each other (backprop and kernels: the oracle
# and the speed code stay apart)
LAYER = {
    "cli": 12, "__main__": 12,
    "commands": 11,
    "interop": 10,
    "compress": 9, "inspect": 9, "plot": 9, "gradcheck": 9, "filters": 9, "seed_examples": 9,
    "train": 8,
    "models": 7,
    "combinators": 6,
    "layers": 5,
    "dispatch": 4,
    "backprop": 3, "kernels": 3,
    "ops": 2, "data": 2,
    "hostmem": 1,
    "config": 0, "types": 0,
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: pathlib.Path):
    """(line, imported jaxcnn module) for every import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "jaxcnn")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "jaxcnn":
                continue
            for alias in node.names:         # `from pkg import module` imports pkg.module
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else target


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_layer():
    assert {_package(m) for m in MODULES} - {""} <= set(LAYER)


def test_imports_point_down_the_layers():
    bad = []
    for name, path in MODULES.items():
        src = _package(name)
        for line, target in _imports(name, path):
            dst = _package(target)
            if src and dst and src != dst and LAYER[dst] >= LAYER[src]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target} (layer {LAYER[dst]} >= "
                           f"{LAYER[src]})")
    assert not bad, "\n".join(bad)


def test_nothing_below_the_command_line_imports_it():
    bad = [f"{name} imports {target}" for name, path in MODULES.items()
           if _package(name) not in ("cli", "commands", "__main__")
           for _, target in _imports(name, path) if _package(target) in ("cli", "commands")]
    assert not bad, bad


def test_the_module_graph_is_acyclic():
    graph = {name: {t for _, t in _imports(name, path) if t in MODULES and t != name}
             for name, path in MODULES.items()}
    # a package's __init__ is imported before its modules: `from . import x` inside
    # jaxcnn/p/x.py's own package is not an edge back to x
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):   # a package importing its own submodules
                continue
            if state.get(nxt) == 1 and not cycle:
                cycle.extend(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2
    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycle, " -> ".join(cycle)


def test_importing_every_module_opens_no_file(tmp_path):
    """With every cache location pointed at a directory of traps (a FIFO where the saved
    auto table and the XLA-flag record would be: opening one blocks), importing all
    modules returns and opens nothing under it."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for trap in ("auto_table.json", "xla_flags.json"):
        os.mkfifo(cache / trap)
    names = sorted(m for m in MODULES if not m.endswith("__main__"))
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print('ok')\n")
    env = {**os.environ, "JAXCNN_CACHE_DIR": str(cache), "JAXCNN_AUTO_TABLE": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
    assert sorted(p.name for p in cache.iterdir()) == ["auto_table.json", "xla_flags.json"]


def test_dir_lists_the_public_packages_lazily():
    code = ("import sys, jaxcnn; names = dir(jaxcnn); assert 'jax' not in sys.modules, 'jax imported'; "
            "print(' '.join(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    for public in ("ops", "layers", "combinators", "models", "train", "data", "inspect", "compress", "plot",
                   "interop", "gradcheck", "backprop", "dispatch"):
        assert public in names
    assert jaxcnn.compress.__name__ == "jaxcnn.compress" and jaxcnn.plot.__name__ == "jaxcnn.plot"

"""The explicit backward passes must not use autodiff: no file under jaxcnn/backprop
(recursively) may call jax.grad, jax.vjp, jax.jvp, jax.linear_transpose (or
value_and_grad, jacfwd/jacrev); and the package imports nothing above jaxcnn.ops."""
import ast
import pathlib

import jaxcnn.backprop

FORBIDDEN = {"grad", "vjp", "jvp", "linear_transpose", "value_and_grad", "jacfwd", "jacrev", "linearize"}


def _violations(source: str, filename: str):
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
            found.append(f"{filename}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jax":
            found += [f"{filename}:{node.lineno} import {a.name}" for a in node.names if a.name in FORBIDDEN]
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN:
            found.append(f"{filename}:{node.lineno} {node.id}")
    return found


def test_backprop_package_never_calls_autodiff():
    root = pathlib.Path(jaxcnn.backprop.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) >= 8
    bad = [v for f in files for v in _violations(f.read_text(), str(f.relative_to(root)))]
    assert not bad, "autodiff used in jaxcnn/backprop: " + ", ".join(bad)


def test_checker_catches_each_form():
    assert _violations("import jax\njax.vjp(f, x)", "a.py")
    assert _violations("from jax import grad\ngrad(f)", "b.py")
    assert _violations("import jax as j\nj.linear_transpose(f, x)", "c.py")
    assert not _violations("from jax import lax\nlax.conv_general_dilated(a, b, (1,), 'VALID')", "d.py")


def test_the_check_recurses_into_subpackages(tmp_path, monkeypatch):
    """A speed kernel hidden in a subpackage (as backprop/fast once was) is found."""
    sub = tmp_path / "backprop" / "fast"
    sub.mkdir(parents=True)
    (tmp_path / "backprop" / "__init__.py").write_text("")
    (sub / "conv.py").write_text("import jax\n_, f = jax.vjp(g, x)\n")
    found = [v for f in sorted((tmp_path / "backprop").rglob("*.py")) for v in _violations(f.read_text(), f.name)]
    assert found == ["conv.py:2 .vjp"]


def test_backprop_imports_only_ops():
    root = pathlib.Path(jaxcnn.backprop.__file__).parent
    bad = []
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module:
                if node.module.split(".")[0] != "ops":
                    bad.append(f"{f.name}: from {'.' * node.level}{node.module}")
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module is None:
                bad += [f"{f.name}: from .. import {a.name}" for a in node.names if a.name != "ops"]
    assert not bad, bad

"""The explicit backward passes must not use autodiff: no file in jaxcnn/backprop may call
jax.grad, jax.vjp, jax.jvp, jax.linear_transpose (or value_and_grad, jacfwd/jacrev)."""
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
    files = sorted(root.glob("*.py"))
    assert len(files) >= 8
    bad = [v for f in files for v in _violations(f.read_text(), f.name)]
    assert not bad, "autodiff used in jaxcnn/backprop: " + ", ".join(bad)


def test_checker_catches_each_form():
    assert _violations("import jax\njax.vjp(f, x)", "a.py")
    assert _violations("from jax import grad\ngrad(f)", "b.py")
    assert _violations("import jax as j\nj.linear_transpose(f, x)", "c.py")
    assert not _violations("from jax import lax\nlax.conv_general_dilated(a, b, (1,), 'VALID')", "d.py")

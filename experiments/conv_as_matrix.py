"""Convolution as a matrix (seeds/000): the filter [-1, 1] on a length-10 signal is the
9x10 bidiagonal matrix A (rows [-1, 1] shifted), y = A x; transposed convolution is A^T
(it maps 9 values back to 10: upsampling); the explicit input gradient is A^T dy.
Prints the demonstration and checks every claim; writes
experiments/results/conv_as_matrix.json. Exit status 1 if a check fails."""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

from jaxcnn import ops
from jaxcnn.backprop import conv_backward, conv_matrix, conv_transpose_matrix


def main() -> int:
    f = np.array([-1.0, 1.0]).reshape(2, 1, 1)          # NWC weight (k, C_in, C_out)
    a = conv_matrix(f, (10, 1))
    x = np.array([4, 9, 3, 0, 3, 9, 7, 3, 7, 3], dtype=np.float64)
    y = np.asarray(ops.conv(x.reshape(1, 10, 1), f)).ravel()
    z = np.arange(1.0, 10.0)
    up = np.asarray(ops.conv_transpose(z.reshape(1, 9, 1), f)).ravel()
    dx = np.asarray(conv_backward(x.reshape(1, 10, 1), f, z.reshape(1, 9, 1))[0]).ravel()
    bidiagonal = np.zeros((9, 10))
    for i in range(9):
        bidiagonal[i, i:i + 2] = [-1, 1]
    checks = {
        "A is the 9x10 bidiagonal matrix": bool(np.array_equal(a, bidiagonal)),
        "conv(x) == A x": bool(np.allclose(y, a @ x)),
        "conv_transpose(z) == A^T z (9 -> 10, upsampling)": bool(np.allclose(up, a.T @ z)),
        "conv_transpose_matrix == A^T": bool(np.array_equal(conv_transpose_matrix(f, (9, 1)), a.T)),
        "explicit dL/dx == A^T dy": bool(np.allclose(dx, a.T @ z)),
    }
    np.set_printoptions(linewidth=120)
    print("A (filter [-1, 1], length-10 signal):")
    print(a.astype(int))
    print(f"x        = {x.astype(int).tolist()}")
    print(f"A x      = {y.tolist()}")
    print(f"z        = {z.astype(int).tolist()}")
    print(f"A^T z    = {(a.T @ z).tolist()}  (transposed conv: {up.tolist()})")
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    out = pathlib.Path(__file__).parent / "results" / "conv_as_matrix.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"A": a.tolist(), "x": x.tolist(), "Ax": y.tolist(), "z": z.tolist(),
                               "ATz": (a.T @ z).tolist(), "checks": checks}, indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

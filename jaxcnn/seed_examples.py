"""The seeds' worked op examples as data: each computes its result with jaxcnn.ops and
carries the number the lecture notes print. ``jaxcnn demo`` and
``experiments/seed_cases.py`` run them; the tests check the same numbers independently."""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import ops as F


class SeedExample(NamedTuple):
    source: str
    name: str
    compute: Callable[[], np.ndarray]
    expected: np.ndarray
    atol: float = 0.0

    def run(self) -> tuple[np.ndarray, bool]:
        got = np.asarray(self.compute())
        ok = got.shape == np.shape(self.expected) and np.allclose(got, self.expected, atol=self.atol, rtol=0)
        return got, ok


def _c1(x, w, **kw):
    return np.asarray(F.conv(np.asarray(x, np.float32)[None, None], np.asarray(w, np.float32)[None, None],
                             layout="NCHW", **kw))[0, 0]


def _c2(x, k, **kw):
    return np.asarray(F.conv(np.asarray(x, np.float32)[None, None], np.asarray(k, np.float32)[None, None],
                             layout="NCHW", **kw))[0, 0]


def _p1(fn, x, *args, **kw):
    return np.asarray(fn(np.asarray(x, np.float32)[None, None], *args, layout="NCHW", **kw))[0, 0]


_X000 = [4, 9, 3, 0, 3, 9, 7, 3, 7, 3]
_X_EDGE = np.ones((6, 8))
_X_EDGE[:, 2:6] = 0
_EDGE_OUT = np.zeros((6, 7))
_EDGE_OUT[:, 1], _EDGE_OUT[:, 5] = 1, -1
_X16 = np.arange(16).reshape(4, 4)

EXAMPLES = [
    SeedExample("000", "1-D x=[1,2,3,2,5,1] * f=[1,2]", lambda: _c1([1, 2, 3, 2, 5, 1], [1, 2]),
                np.array([5, 8, 7, 12, 7])),
    SeedExample("000", "1-D, stride 2", lambda: _c1([1, 2, 3, 2, 5, 1], [1, 2], stride=2), np.array([5, 7, 7])),
    SeedExample("000", "1-D, zero padding 1", lambda: _c1([1, 2, 3, 2, 5, 1], [1, 2], padding=1),
                np.array([2, 5, 8, 7, 12, 7, 1])),
    SeedExample("003", "Ex. 12.1.2 1-D", lambda: _c1([2, 1, 1, 7, -1, 2, 3, 1], [3, 2, -1]),
                np.array([7, -2, 18, 17, -2, 11])),
    SeedExample("003", "Ex. 12.2.3 2-D",
                lambda: _c2([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]],
                            [[1, 0, 1], [0, 1, 0], [1, 0, 1]]),
                np.array([[4, 3, 4], [2, 4, 3], [2, 3, 4]])),
    SeedExample("002", "5x5 X * 3x3 K",
                lambda: _c2([[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]],
                            [[0, 1, 2], [2, 2, 0], [0, 1, 2]]),
                np.array([[12, 12, 17], [10, 17, 19], [9, 6, 14]])),
    SeedExample("002", "sharpen, top-left of zero-padded image",
                lambda: _c2([[60, 113, 56, 139, 85], [73, 121, 54, 84, 128], [131, 99, 70, 129, 127],
                             [80, 57, 115, 69, 134], [104, 126, 123, 95, 130]],
                            [[0, -1, 0], [-1, 5, -1], [0, -1, 0]], padding=1)[0, 0], np.array(114)),
    SeedExample("004", "corr2d(arange(9), [[0,1],[2,3]])", lambda: _c2(np.arange(9).reshape(3, 3), [[0, 1], [2, 3]]),
                np.array([[19, 25], [37, 43]])),
    SeedExample("004", "... with padding 1", lambda: _c2(np.arange(9).reshape(3, 3), [[0, 1], [2, 3]], padding=1),
                np.array([[0, 3, 8, 4], [9, 19, 25, 10], [21, 37, 43, 16], [6, 7, 8, 0]])),
    SeedExample("001", "zero-diagonal 4x4 * [[1,1],[-1,-1]]", lambda: _c2(np.ones((4, 4)) - np.eye(4),
                                                                         [[1, 1], [-1, -1]]),
                np.array([[0, 1, 0], [-1, 0, 1], [0, -1, 0]])),
    SeedExample("004", "edge detector [[1,-1]]", lambda: _c2(_X_EDGE, [[1, -1]]), _EDGE_OUT),
    SeedExample("004", "edge detector on X^T", lambda: _c2(_X_EDGE.T, [[1, -1]]), np.zeros((8, 5))),
    SeedExample("000", "max-pool k3", lambda: _p1(F.max_pool, _X000, 3), np.array([9, 9, 7])),
    SeedExample("000", "max-pool k3 s1", lambda: _p1(F.max_pool, _X000, 3, 1), np.array([9, 9, 3, 9, 9, 9, 7, 7])),
    SeedExample("000", "max-pool k3 s1 p1", lambda: _p1(F.max_pool, _X000, 3, 1, 1),
                np.array([9, 9, 9, 3, 9, 9, 9, 7, 7, 7])),
    SeedExample("000", "avg-pool k3", lambda: _p1(F.avg_pool, _X000, 3), np.array([5.3333, 4.0, 5.6667]), 1e-4),
    SeedExample("000", "avg-pool k3 s1", lambda: _p1(F.avg_pool, _X000, 3, 1),
                np.array([5.3333, 4.0, 2.0, 4.0, 6.3333, 6.3333, 5.6667, 4.3333]), 1e-4),
    SeedExample("000", "avg-pool k3 s1 p1 (padding counted)", lambda: _p1(F.avg_pool, _X000, 3, 1, 1),
                np.array([4.3333, 5.3333, 4.0, 2.0, 4.0, 6.3333, 6.3333, 5.6667, 4.3333, 3.3333]), 1e-4),
    SeedExample("004", "max-pool 3 on arange(16)", lambda: _p1(F.max_pool, _X16, 3), np.array([[10]])),
    SeedExample("004", "max-pool 3 p1 s2", lambda: _p1(F.max_pool, _X16, 3, 2, 1), np.array([[5, 7], [13, 15]])),
    SeedExample("004", "max-pool (2,3) s(2,3) p(0,1)", lambda: _p1(F.max_pool, _X16, (2, 3), (2, 3), (0, 1)),
                np.array([[5, 7], [13, 15]])),
]


def run_all() -> list[dict]:
    """Run every example; return rows with the source, name, result and a pass flag."""
    rows = []
    for ex in EXAMPLES:
        got, ok = ex.run()
        rows.append({"source": ex.source, "name": ex.name, "got": np.round(got, 4).tolist(),
                     "expected": np.asarray(ex.expected).tolist(), "ok": bool(ok)})
    return rows

"""gradcheck: agreement on ops and a model-like Layer, the report table, max-pool tie
detection, and the CLI."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import cli
from jaxcnn.combinators import serial
from jaxcnn.gradcheck import TOLERANCES, gradcheck_fn, gradcheck_model, gradcheck_op
from jaxcnn.layers import AvgPool, BatchNorm, Conv, Dense, Flatten, Relu


def test_gradcheck_conv_op_passes_all_methods():
    rng = np.random.default_rng(0)
    rep = gradcheck_op("conv", rng.normal(size=(1, 7, 6, 2)), rng.normal(size=(3, 2, 1, 4)), rng.normal(size=4),
                       stride=(2, 3), padding=[(1, 0), (2, 1)], dilation=(1, 2), groups=2, padding_mode="circular",
                       check_kwargs={"fd_samples": 8})
    assert rep.passed, rep.table()
    assert {r.method for r in rep.rows} == set(TOLERANCES)
    assert "conv x1" in rep.table() and "PASSED" in rep.table()


def test_gradcheck_reports_max_pool_ties():
    x = np.zeros((1, 4, 4, 1))
    x[0, 0, 0, 0] = x[0, 0, 1, 0] = 1.0          # a tie in the first window, zeros tie elsewhere
    rep = gradcheck_op("max_pool", x, kernel_size=2, check_kwargs={"fd_samples": 16})
    assert rep.ties == 4
    assert "tied maxima" in rep.table()
    fd = [r for r in rep.rows if r.method == "finite_diff"][0]
    assert not fd.passed and not rep.passed          # reported, not hidden
    explicit = [r for r in rep.rows if r.method == "explicit"][0]
    assert explicit.passed


def test_gradcheck_detects_a_wrong_gradient():
    @jax.custom_vjp
    def bad(x):
        return jnp.sin(x)

    bad.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x) * 1.01,))
    rep = gradcheck_fn(lambda x: bad(x), np.linspace(0.1, 1, 5))
    assert not rep.passed


def _tiny_network():
    """conv -> batch norm -> relu -> avg pool -> flatten -> dense, as a ``serial`` Layer."""
    return serial(("conv", Conv(3, 3, padding=1)), ("bn", BatchNorm()), ("relu", Relu()), ("pool", AvgPool(2)),
                  ("flatten", Flatten()), ("dense", Dense(2)))


def test_gradcheck_model_train_mode():
    rep = gradcheck_model(_tiny_network(), (2, 4, 4, 2), train=True, fd_samples=4, jacobian_max=30)
    assert rep.passed, rep.table()
    assert any(r.leaf == "params/conv/weight" for r in rep.rows) and any(r.leaf == "input" for r in rep.rows)


def test_cli_gradcheck_op(capsys):
    code = cli.main(["gradcheck", "--op", "conv", "--stride", "2", "--padding", "1", "--kernel", "3",
                     "--input", "6,6,2", "--batch", "1", "--layout", "NHWC", "--fd-samples", "4"])
    out = capsys.readouterr().out
    assert code == 0 and "PASSED" in out and "finite_diff" in out

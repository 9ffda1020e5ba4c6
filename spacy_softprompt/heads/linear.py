"""thinc's ``Linear`` and ``Maxout`` layers with their matrix products in torch on the CPU.

thinc's ``NumpyOps.gemm`` (blis, one thread) is 1.7x slower than torch's CPU
matmul for the heads' tall and narrow products (every token of a batch times
a few dozen tags; every candidate pair times the relation classifier's hidden
units); torch also follows the process's thread setting
(``torch.set_num_threads``). On other backends (cupy) the products stay with
``ops.gemm``. :func:`TorchLinear` has the same name, dimensions, parameters
and initialisation as thinc's ``Linear``; :func:`use_torch_products` gives a
thinc ``Maxout`` this module's forward and keeps everything else, so saved
weights load unchanged.
"""
from functools import partial
from typing import Callable, Optional, Tuple

import numpy
import torch
from thinc.api import Model, NumpyOps
from thinc.initializers import glorot_uniform_init, zero_init
from thinc.layers.linear import init as linear_init
from thinc.types import Floats2d


def TorchLinear(nO: Optional[int] = None, nI: Optional[int] = None) -> Model[Floats2d, Floats2d]:
    """``Y = X W^T + b``, the products by torch on NumPy arrays."""
    return Model(
        "linear",
        forward,
        init=partial(linear_init, glorot_uniform_init, zero_init),
        dims={"nO": nO, "nI": nI},
        params={"W": None, "b": None},
    )


def product(ops, a: Floats2d, b: Floats2d, *, trans1: bool = False, trans2: bool = False) -> Floats2d:
    """``op(a) @ op(b)`` as ``ops.gemm`` computes it: torch for NumPy float32 arrays."""
    if not isinstance(ops, NumpyOps) or a.dtype != numpy.float32 or b.dtype != numpy.float32:
        return ops.gemm(a, b, trans1=trans1, trans2=trans2)
    left, right = (torch.from_numpy(_torch_ready(x)) for x in (a, b))
    with torch.no_grad():
        out = torch.matmul(left.T if trans1 else left, right.T if trans2 else right)
    return out.numpy()


def _torch_ready(array: numpy.ndarray) -> numpy.ndarray:
    """C-contiguous and writeable (``torch.from_numpy`` shares the memory; read-only arrays are copied)."""
    array = numpy.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def forward(model: Model[Floats2d, Floats2d], X: Floats2d, is_train: bool) -> Tuple[Floats2d, Callable]:
    W = model.get_param("W")
    b = model.get_param("b")
    Y = product(model.ops, X, W, trans2=True)
    Y += b

    def backprop(dY: Floats2d) -> Floats2d:
        model.inc_grad("b", dY.sum(axis=0))
        model.inc_grad("W", product(model.ops, dY, X, trans1=True))
        return product(model.ops, dY, W)

    return Y, backprop


def use_torch_products(model: Model) -> Model:
    """Give every thinc ``maxout`` layer inside ``model`` :func:`maxout_forward`; returns ``model``."""
    from thinc.layers.maxout import forward as thinc_maxout_forward

    for node in model.walk():
        if node.name == "maxout" and node._func is thinc_maxout_forward:
            node._func = maxout_forward
    return model


def maxout_forward(model: Model[Floats2d, Floats2d], X: Floats2d, is_train: bool) -> Tuple[Floats2d, Callable]:
    """thinc's ``Maxout`` (``W: [nO, nP, nI]``, ``b: [nO, nP]``): the best of ``nP``
    affine pieces per output unit, the products by :func:`product`."""
    ops = model.ops
    nO, nP, nI = model.get_dim("nO"), model.get_dim("nP"), model.get_dim("nI")
    W = ops.reshape2f(model.get_param("W"), nO * nP, nI)
    pieces = product(ops, X, W, trans2=True)
    pieces += ops.reshape1f(model.get_param("b"), nO * nP)
    best, which = ops.maxout(ops.reshape3f(pieces, pieces.shape[0], nO, nP))

    def backprop(d_best: Floats2d) -> Floats2d:
        d_pieces = ops.backprop_maxout(d_best, which, nP)
        model.inc_grad("b", d_pieces.sum(axis=0))
        d_flat = ops.reshape2f(d_pieces, d_pieces.shape[0], nO * nP)
        model.inc_grad("W", ops.reshape3f(product(ops, d_flat, X, trans1=True), nO, nP, nI))
        return product(ops, d_flat, W)

    return best, backprop

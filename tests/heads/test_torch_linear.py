"""TorchLinear and the torch Maxout forward compute what thinc's layers compute and load their weights."""
import numpy
import pytest
from thinc.api import Linear, NumpyOps

from spacy_softprompt.heads.linear import TorchLinear, product


def assert_same_as_thinc(ours, theirs, X, rng, nO, grads, back_tol, grad_rtol):
    """Forward, input gradient and parameter gradients of ``ours`` equal ``theirs``'s;
    ``grads``: ``(our node, their node)`` pairs whose ``W`` and ``b`` gradients are compared."""
    want, want_back = theirs(X, is_train=True)
    got, got_back = ours(X, is_train=True)
    assert got.dtype == numpy.float32 and got.shape == (X.shape[0], nO)
    numpy.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    dY = rng.normal(size=(X.shape[0], nO)).astype("float32")
    numpy.testing.assert_allclose(got_back(dY), want_back(dY), atol=back_tol, rtol=back_tol)
    for our_node, their_node in grads:
        for name in ("W", "b"):
            numpy.testing.assert_allclose(our_node.get_grad(name), their_node.get_grad(name), atol=1e-4, rtol=grad_rtol)


@pytest.mark.parametrize("rows", [0, 1, 37])
def test_forward_and_gradients_match_thincs_linear(rows):
    rng = numpy.random.default_rng(rows)
    X = rng.normal(size=(rows, 24)).astype("float32")
    thinc_layer, ours = Linear(nO=9), TorchLinear(nO=9)
    thinc_layer.initialize(X=numpy.zeros((2, 24), dtype="float32"))
    ours.from_bytes(thinc_layer.to_bytes())  # same parameters: saved weights load unchanged
    thinc_layer.set_param("b", rng.normal(size=(9,)).astype("float32"))
    ours.set_param("b", thinc_layer.get_param("b").copy())
    assert_same_as_thinc(ours, thinc_layer, X, rng, 9, [(ours, thinc_layer)], back_tol=1e-5, grad_rtol=1e-5)


def test_product_follows_gemm_for_every_transpose():
    ops = NumpyOps()
    rng = numpy.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)).astype("float32"), rng.normal(size=(6, 6)).astype("float32")  # square: every transpose fits
    for trans1 in (False, True):
        for trans2 in (False, True):
            numpy.testing.assert_allclose(
                product(ops, a, b, trans1=trans1, trans2=trans2), ops.gemm(a, b, trans1=trans1, trans2=trans2),
                atol=1e-5, rtol=1e-5,
            )
    # other dtypes go to ops.gemm unchanged (thinc 8.2 computes float64 there, thinc 8.3's blis refuses it)
    a64, b64 = a.astype("float64"), b.astype("float64")
    calls = []

    class RecordingOps(NumpyOps):
        def gemm(self, x, y, out=None, trans1=False, trans2=False):
            calls.append(x.dtype)
            return numpy.matmul(x.T if trans1 else x, y.T if trans2 else y)

    got = product(RecordingOps(), a64, b64)
    assert calls == [numpy.float64] and got.dtype == numpy.float64
    numpy.testing.assert_allclose(got, a64 @ b64)
    product(RecordingOps(), a, b)
    assert calls == [numpy.float64]  # float32 does not reach ops.gemm


def test_read_only_inputs_are_copied_not_shared():
    import warnings

    ops = NumpyOps()
    a = numpy.arange(12, dtype="float32").reshape(3, 4)
    b = numpy.ones((4, 2), dtype="float32")
    a.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it shares a read-only NumPy array
        out = product(ops, a, b)
    numpy.testing.assert_array_equal(out, a @ b)


@pytest.mark.parametrize("rows", [1, 53])  # thinc's own backprop_maxout refuses 0 rows
def test_maxout_forward_matches_thincs_and_loads_its_weights(rows):
    from thinc.api import Maxout

    from spacy_softprompt.heads.linear import maxout_forward, use_torch_products

    rng = numpy.random.default_rng(rows)
    X = rng.normal(size=(rows, 40)).astype("float32")
    thinc_model = Maxout(nO=12, nP=2, normalize=True, dropout=0.0)
    ours = use_torch_products(Maxout(nO=12, nP=2, normalize=True, dropout=0.0))
    assert [n._func for n in ours.walk() if n.name == "maxout"] == [maxout_forward]
    thinc_model.initialize(X=numpy.zeros((2, 40), dtype="float32"))
    thinc_inner = [n for n in thinc_model.walk() if n.name == "maxout"][0]
    thinc_inner.set_param("b", rng.normal(size=(12, 2)).astype("float32"))
    ours.from_bytes(thinc_model.to_bytes())  # same layers and parameters: saved weights load unchanged
    ours_inner = [n for n in ours.walk() if n.name == "maxout"][0]
    assert_same_as_thinc(ours, thinc_model, X, rng, 12, [(ours_inner, thinc_inner)], back_tol=1e-4, grad_rtol=1e-4)

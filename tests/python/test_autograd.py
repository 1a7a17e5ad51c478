"""Autograd from Python: backward() and .grad against central finite
differences in f64 (an independent reference), no_grad, and leaves."""
import numpy as np
import pytest

import quanta


def numeric_gradient(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        g[i] = (f(up) - f(down)) / (2 * eps)
    return g


def test_composite_function_matches_finite_differences():
    rng = np.random.default_rng(1)
    x0, w0 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))

    def value(x, w):
        tx, tw = quanta.from_numpy(x), quanta.from_numpy(w)
        return ((quanta.tanh(tx @ tw) * 1.5 + tx.sum(dim=1, keepdim=True)).sigmoid()).mean().item()

    x = quanta.tensor(x0, requires_grad=True)
    w = quanta.tensor(w0, requires_grad=True)
    y = ((quanta.tanh(x @ w) * 1.5 + x.sum(dim=1, keepdim=True)).sigmoid()).mean()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), numeric_gradient(lambda v: value(v, w0), x0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(w.grad.numpy(), numeric_gradient(lambda v: value(x0, v), w0), rtol=1e-6, atol=1e-9)
    assert x.is_leaf and not y.is_leaf


def test_convolution_and_cross_entropy_match_finite_differences():
    rng = np.random.default_rng(2)
    x0, k0 = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    labels = quanta.tensor([1, 2])

    def loss(x, k):
        logits = quanta.conv2d(x, k, padding=(1, 1)).mean(dim=(2, 3))
        return quanta.nn.functional.cross_entropy(logits, labels)

    k = quanta.tensor(k0, requires_grad=True)
    loss(quanta.from_numpy(x0), k).backward()
    want = numeric_gradient(lambda v: loss(quanta.from_numpy(x0), quanta.from_numpy(v)).item(), k0)
    np.testing.assert_allclose(k.grad.numpy(), want, rtol=1e-5, atol=1e-9)


def test_gradients_accumulate_and_no_grad_records_nothing():
    x = quanta.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2 + 3, 4 + 3])  # d(x^2)/dx + 3, accumulated
    x.grad = None
    assert x.grad is None
    with quanta.no_grad():
        assert not quanta.is_grad_enabled()
        y = x * 2.0
    assert quanta.is_grad_enabled()
    assert not y.requires_grad
    with pytest.raises(quanta.Error):
        y.sum().backward()  # nothing recorded: no graph to run

"""Layers written in Python, as PyTorch users write nn.Module subclasses: their
parameters and children are registered (parameters(), state_dict(), the
optimizer and autograd see them), QAT attaches to their C++ layers, and a
Python layer inside a Sequential keeps working after the caller drops it."""
import gc

import numpy as np
import pytest

import quanta
from quanta import nn, optim, quant


class Mlp(nn.Layer):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 8, seed=0)
        self.out = nn.Linear(8, 3, seed=1)
        self.scale = quanta.ones(3).requires_grad_()  # a parameter of its own
        self.register_buffer("calls", quanta.zeros(1))
        self.note = "plain attribute"

    def forward(self, x):
        return self.out(self.hidden(x).relu()) * self.scale


def test_python_layers_register_parameters_and_children():
    m = Mlp()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    assert [n for n, _ in m.named_buffers()] == ["calls"]
    assert set(m.state_dict()) == set(names) | {"calls"}
    assert m.note == "plain attribute"
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    h = np.maximum(x @ m.hidden.weight.detach().numpy().T + m.hidden.bias.detach().numpy(), 0)
    want = h @ m.out.weight.detach().numpy().T + m.out.bias.detach().numpy()
    np.testing.assert_allclose(m(quanta.from_numpy(x)).detach().numpy(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(AttributeError, match="'Mlp' object has no attribute 'missing'"):
        m.missing


def test_python_layers_train_and_take_qat():
    m = Mlp()
    x, y = quanta.randn(64, 4), quanta.tensor([i % 3 for i in range(64)])
    opt = optim.SGD(m.parameters(), lr=0.1)
    first = None
    for _ in range(30):
        loss = nn.functional.cross_entropy(m(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert not np.allclose(m.scale.detach().numpy(), 1.0)  # the Python-level parameter trained too
    report = quant.prepare_qat(m, quant.Policy(8, 8, "ema", first_last_8bit=False))
    assert [row[0] for row in report.layers] == ["hidden", "out"]
    m(x)  # the fake-quant layers run inside the Python forward


def test_a_python_layer_inside_a_sequential_outlives_its_name():
    class Double(nn.Layer):
        def forward(self, x):
            return x * 2.0

    seq = nn.Sequential(Double(), nn.ReLU())
    gc.collect()
    np.testing.assert_array_equal(seq(quanta.tensor([-1.0, 3.0])).numpy(), [0.0, 6.0])
    seq.append(Double())
    gc.collect()
    np.testing.assert_array_equal(seq(quanta.tensor([1.0])).numpy(), [4.0])


def test_a_layer_without_forward_says_so():
    class NoForward(nn.Layer):
        pass

    with pytest.raises(quanta.Error, match="forward"):
        NoForward()(quanta.ones(1))

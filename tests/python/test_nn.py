"""Modules, optimizers and files from Python: a Linear layer against NumPy, SGD
with Nesterov momentum against its update written out by hand, state dicts and
checkpoints round trip, and bad files raise OSError/ValueError naming them."""
import os

import numpy as np
import pytest

import quanta
from quanta import nn, optim


def test_linear_and_sequential_forward_match_numpy():
    layer = nn.Linear(4, 3, seed=0)
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(layer(quanta.from_numpy(x)).detach().numpy(), x @ w.T + b, rtol=1e-5, atol=1e-6)
    net = nn.Sequential(layer, nn.ReLU(), nn.Linear(3, 2, seed=1))
    assert len(net) == 3 and len(net.parameters()) == 4 and net.num_parameters() == 4 * 3 + 3 + 3 * 2 + 2
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_sgd_nesterov_matches_the_update_by_hand():
    # f(p) = sum(p^2) / 2: gradient p. PyTorch's SGD with weight decay wd:
    # g = grad + wd p; v = m v + g (v = g at the first step); p -= lr (g + m v).
    p = quanta.tensor([1.0, -2.0], requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    want, v = np.array([1.0, -2.0]), None
    for _ in range(3):
        opt.zero_grad()
        ((p * p).sum() * 0.5).backward()
        opt.step()
        g = want + 0.01 * want
        v = g if v is None else 0.9 * v + g
        want = want - 0.1 * (g + 0.9 * v)
    np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-6)
    assert opt.steps == 3


def test_parameter_groups_and_schedules():
    a, b = quanta.ones(2, dtype=quanta.f32), quanta.ones(2)
    a.requires_grad = True
    b.requires_grad = True
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.05, "weight_decay": 0.0}], lr=0.1)
    assert [g["lr_mult"] for g in opt.param_groups] == [1.0, 0.5]
    sched = optim.CosineWarmup(opt, warmup_steps=0, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.lr)
        sched.step()
    # cosine from 0.1 to 0 over 4 steps: 0.1 (1 + cos(pi k / 4)) / 2
    np.testing.assert_allclose(lrs, [0.1 * (1 + np.cos(np.pi * k / 4)) / 2 for k in range(4)], rtol=1e-12)


def test_state_dict_and_checkpoint_round_trip(tmp_path):
    model = quanta.models.make("fmnist_resnet8_half", seed=1)
    other = quanta.models.make("fmnist_resnet8_half", seed=2)
    state = model.state_dict()
    assert "conv1.weight" in state and "bn1.running_var" in state
    other.load_state_dict(state)
    x = quanta.randn(2, 1, 28, 28)
    model.eval(), other.eval()
    np.testing.assert_array_equal(model(x).detach().numpy(), other(x).detach().numpy())
    path = str(tmp_path / "ckpt.safetensors")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    nn.save_checkpoint(path, model, opt, {"epoch": "3"})
    fresh = quanta.models.make("fmnist_resnet8_half", seed=3)
    assert nn.load_checkpoint(path, fresh)["epoch"] == "3"
    fresh.eval()
    np.testing.assert_array_equal(fresh(x).detach().numpy(), model(x).detach().numpy())
    tensors, meta = nn.load_file(path)
    assert "model.conv1.weight" in tensors and meta["epoch"] == "3"


def test_bad_files_and_states_raise_named_errors(tmp_path):
    model = quanta.models.make("fmnist_resnet8_half", seed=1)
    with pytest.raises(FileNotFoundError, match="no_such.safetensors"):
        nn.load_checkpoint(str(tmp_path / "no_such.safetensors"), model)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ValueError, match="bad.safetensors"):
        nn.load_checkpoint(str(bad), model)
    with pytest.raises(ValueError, match="conv1.weight"):
        model.load_state_dict({"conv1.weight": quanta.zeros(1)})
    with pytest.raises(quanta.Error, match="unknown model 'resnet7'"):
        quanta.models.make("resnet7")
    assert not os.path.exists(str(tmp_path / "no_such.safetensors"))

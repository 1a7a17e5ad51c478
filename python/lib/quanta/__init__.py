"""Quanta from Python: tensors, autograd, modules, optimizers, data, and
quantization (QAT, PTQ, conversion to integer models, ONNX export).

    import quanta
    x = quanta.from_numpy(array)            # shares the array's memory
    model = quanta.models.make("fmnist_resnet8", seed=0)
    report = quanta.quant.prepare_qat(model, quanta.quant.Policy(4, 4, "lsq"))

docs/python.md has the whole tour. Misuse raises quanta.Error (a ValueError)
with the C++ message; a bad or missing file raises ValueError or OSError naming
it.
"""
import builtins as _builtins

import numpy as _np

from quanta._C import *  # noqa: F401,F403  Tensor, dtypes, ops, no_grad, ...
from quanta._C import Error, Tensor, from_numpy  # noqa: F401
from quanta._C import data, models, nn, optim, quant  # noqa: F401

# `from quanta import *` leaves Python's own names alone (quanta.abs, quanta.bool, ...).
__all__ = [name for name in dir() if not name.startswith("_") and not hasattr(_builtins, name)]



def _keep_layers(sequential_init, sequential_append):
    # A Sequential holds its layers through C++ pointers: it also keeps their
    # Python objects, so layers written in Python live as long as it does.
    def __init__(self, *layers):
        sequential_init(self, *layers)
        self._python_layers = list(layers)

    def append(self, layer):
        sequential_append(self, layer)
        self._python_layers.append(layer)

    nn.Sequential.__init__ = __init__
    nn.Sequential.append = append


_keep_layers(nn.Sequential.__init__, nn.Sequential.append)


def tensor(data, dtype=None, requires_grad=False):
    """A new tensor holding a copy of `data` (a number, nested lists, a NumPy
    array or a Tensor). Python floats become f32 and ints i64, as in PyTorch;
    NumPy arrays keep their dtype."""
    if isinstance(data, Tensor):
        t = data.detach().clone()
    else:
        array = _np.array(data, copy=True)
        if not isinstance(data, _np.ndarray):
            if array.dtype == _np.float64:
                array = array.astype(_np.float32)
            elif array.dtype.kind in "iu" and array.dtype != _np.uint8:
                array = array.astype(_np.int64)
        t = from_numpy(_np.ascontiguousarray(array))
    if dtype is not None:
        t = t.to(dtype)
    if requires_grad:
        t.requires_grad = True
    return t

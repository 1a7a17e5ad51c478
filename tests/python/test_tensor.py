"""quanta.Tensor from Python: memory shared with NumPy and DLPack (same
addresses, writes seen both ways), operators, indexing and reductions against
NumPy, and errors raised as quanta.Error."""
import numpy as np
import pytest

import quanta


def test_numpy_round_trip_shares_memory():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = quanta.from_numpy(a)
    assert t.data_ptr() == a.ctypes.data
    assert t.shape == (3, 4) and t.dtype == quanta.f32 and t.device == "cpu"
    b = t.numpy()
    assert b.ctypes.data == a.ctypes.data and b.base is not None
    t[1, 2] = -5.0  # a write through the tensor shows in both arrays
    assert a[1, 2] == -5.0 and b[1, 2] == -5.0
    a[0, 0] = 7.0  # and a write through NumPy shows in the tensor
    assert t[0, 0].item() == 7.0
    # The buffer protocol gives the same memory.
    assert np.asarray(memoryview(t)).ctypes.data == a.ctypes.data


def test_numpy_keeps_the_tensor_alive_and_the_tensor_the_array():
    t = quanta.from_numpy(np.ones((2, 2), dtype=np.float64))  # the array has no other reference
    b = (t * 3.0).numpy()
    del t
    np.testing.assert_array_equal(b, np.full((2, 2), 3.0))


def test_strided_arrays_are_viewed_not_copied():
    a = np.arange(24, dtype=np.int64).reshape(4, 6)
    at = a.T[::2]  # (3, 4) with strides (16, 48) bytes
    t = quanta.from_numpy(at)
    assert t.stride() == (2, 6) and not t.is_contiguous()
    assert t.data_ptr() == at.ctypes.data
    np.testing.assert_array_equal(t.numpy(), at)
    np.testing.assert_array_equal(t.contiguous().numpy(), np.ascontiguousarray(at))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_])
def test_dtypes_round_trip(dtype):
    a = (np.arange(10) % 3).astype(dtype)
    np.testing.assert_array_equal(quanta.from_numpy(a).numpy(), a)


def test_bad_arrays_and_tensors_raise_quanta_error():
    with pytest.raises(quanta.Error, match="strides"):
        quanta.from_numpy(np.arange(4.0)[::-1])
    with pytest.raises(quanta.Error, match="complex"):
        quanta.from_numpy(np.zeros(3, dtype=np.complex64))
    with pytest.raises(quanta.Error, match="requires grad"):
        quanta.tensor([1.0], requires_grad=True).numpy()
    with pytest.raises(quanta.Error, match="NumPy has no dtype for bf16"):
        quanta.ones(2, dtype=quanta.bf16).numpy()
    with pytest.raises(ValueError, match=r"do not broadcast \(f32\[2, 3\], f32\[4\]\)"):
        quanta.zeros(2, 3) + quanta.zeros(4)  # quanta.Error is a ValueError


def test_dlpack_both_ways_with_numpy():
    t = quanta.arange(6).reshape(2, 3)
    a = np.from_dlpack(t)
    assert a.ctypes.data == t.data_ptr()
    np.testing.assert_array_equal(a, [[0, 1, 2], [3, 4, 5]])
    b = np.linspace(0, 1, 8).reshape(2, 4)[:, 1:3]  # strided
    u = quanta.from_dlpack(b)
    assert u.data_ptr() == b.ctypes.data and u.stride() == (4, 1)
    np.testing.assert_array_equal(u.numpy(), b)


def test_dlpack_with_torch():
    torch = pytest.importorskip("torch")
    t = quanta.arange(6).reshape(2, 3)
    pt = torch.from_dlpack(t)
    assert pt.data_ptr() == t.data_ptr()
    back = quanta.from_dlpack(torch.arange(4, dtype=torch.float64))
    np.testing.assert_array_equal(back.numpy(), [0, 1, 2, 3])


def test_operators_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((4,)).astype(np.float32)
    ta, tb = quanta.from_numpy(a), quanta.from_numpy(b)
    for got, want in [(ta + tb, a + b), (ta - tb, a - b), (ta * tb, a * b), (ta / tb, a / b), (-ta, -a),
                      (2.0 - ta, 2.0 - a), (1.0 / tb, 1.0 / b), (ta ** 2, a ** 2), (abs(ta), np.abs(a)),
                      (ta @ ta.T, a @ a.T), (quanta.matmul(ta, ta.T), a @ a.T), (ta.exp(), np.exp(a)),
                      (ta.relu(), np.maximum(a, 0)), (quanta.tanh(ta), np.tanh(a))]:
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal((ta > tb).numpy(), a > b)
    np.testing.assert_array_equal((ta == 0.5).numpy(), a == 0.5)
    np.testing.assert_allclose(ta.sum().item(), a.sum(), rtol=1e-5)
    np.testing.assert_allclose(ta.mean(dim=1).numpy(), a.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(ta.max(dim=0, keepdim=True).numpy(), a.max(axis=0, keepdims=True))
    np.testing.assert_allclose(ta.var(dim=(0, 1)).item(), a.var(ddof=1), rtol=1e-5)
    np.testing.assert_array_equal(ta.argmax(dim=1).numpy(), a.argmax(axis=1))
    x = quanta.from_numpy(a.copy())
    x += 1.0
    x *= tb
    np.testing.assert_allclose(x.numpy(), (a + 1) * b, rtol=1e-6)


def test_indexing_matches_numpy():
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    t = quanta.from_numpy(a)
    for key in [1, -1, (slice(None), 2), (0, slice(1, 4)), (slice(None, None, 2), slice(1, None, 3), -2),
                (Ellipsis, 3), (None, 1), (slice(1, 3), None, Ellipsis)]:
        view = t[key]
        np.testing.assert_array_equal(view.numpy(), a[key], err_msg=str(key))
        if view.ndim:
            assert view.numpy().ctypes.data == a[key].ctypes.data  # a view, as NumPy's
    np.testing.assert_array_equal(t[quanta.tensor([2, 0])].numpy(), a[[2, 0]])
    with pytest.raises(quanta.Error, match="out of range"):
        t[3]
    t[0, :, 1] = quanta.full([4], 9.0)
    assert (a[0, :, 1] == 9).all()


def test_creation():
    assert quanta.tensor([1, 2]).dtype == quanta.i64
    assert quanta.tensor([1.5]).dtype == quanta.f32
    assert quanta.tensor(np.zeros(2)).dtype == quanta.f64
    np.testing.assert_array_equal(quanta.zeros(2, 3).numpy(), np.zeros((2, 3)))
    np.testing.assert_array_equal(quanta.ones((2,)).numpy(), [1, 1])
    np.testing.assert_array_equal(quanta.eye(2).numpy(), np.eye(2))
    np.testing.assert_array_equal(quanta.arange(1, 4).numpy(), [1, 2, 3])
    np.testing.assert_array_equal(quanta.cat([quanta.ones(2), quanta.zeros(1)]).numpy(), [1, 1, 0])
    quanta.manual_seed(3)
    a = quanta.randn(5).numpy()
    quanta.manual_seed(3)
    np.testing.assert_array_equal(quanta.randn(5).numpy(), a)


def test_quantized_tensors():
    # x / 0.5 + 10, rounded half to even, clamped to [0, 255]: 1.25 -> 12.5 -> 12.
    q = quanta.quantize_per_tensor(quanta.tensor([-1.0, 0.0, 1.25, 200.0]), 0.5, 10, quanta.quint8)
    assert q.is_quantized and q.q_scale() == 0.5 and q.q_zero_point() == 10
    np.testing.assert_array_equal(q.int_repr().numpy(), [8, 10, 12, 255])
    np.testing.assert_array_equal(q.dequantize().numpy(), [-1.0, 0.0, 1.0, 122.5])
    with pytest.raises(quanta.Error, match="int_repr"):
        q.numpy()


def test_star_import_keeps_python_builtins():
    scope = {}
    exec("from quanta import *", scope)
    assert "abs" not in scope and "bool" not in scope and "round" not in scope
    assert "from_numpy" in scope and "Tensor" in scope and "f32" in scope


def test_float8_converts_and_refuses_arithmetic():
    # 0.3 -> 0.3125 (E4M3: 1.010 x 2^-2), 500 saturates to 448, -1e-9 to -0.
    x = quanta.tensor([0.3, 500.0, -1e-9])
    q = x.to(quanta.float8_e4m3fn)
    assert q.dtype == quanta.f8_e4m3
    np.testing.assert_array_equal(q.to(quanta.f32).numpy(), [0.3125, 448.0, -0.0])
    np.testing.assert_array_equal(x.to(quanta.f4_e2m1).to(quanta.f32).numpy(), [0.5, 6.0, -0.0])
    with pytest.raises(quanta.Error, match="storage-only"):
        q + q

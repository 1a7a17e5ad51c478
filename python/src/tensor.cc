// quanta.Tensor: dtypes, creation, views and indexing, the ops of core, autograd,
// and memory shared with NumPy (buffer protocol) and DLPack producers/consumers.
#include <dlpack/dlpack.h>

#include <cstring>
#include <optional>
#include <vector>

#include "autograd/autograd.h"
#include "core/backend.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "python/src/common.h"

namespace quanta::python {
namespace {

// ---- NumPy ------------------------------------------------------------------

// The NumPy dtype of a tensor dtype, or nullopt (bf16 and the quantized dtypes
// have none).
std::optional<py::dtype> NumpyDType(DType d) {
  switch (d) {
    case DType::kF32: return py::dtype::of<float>();
    case DType::kF64: return py::dtype::of<double>();
    case DType::kF16: return py::dtype("float16");
    case DType::kI32: return py::dtype::of<int32_t>();
    case DType::kI64: return py::dtype::of<int64_t>();
    case DType::kI8: return py::dtype::of<int8_t>();
    case DType::kU8: return py::dtype::of<uint8_t>();
    case DType::kBool: return py::dtype::of<bool>();
    default: return std::nullopt;
  }
}

std::optional<DType> DTypeOfNumpy(const py::dtype& dt) {
  for (DType d : {DType::kF32, DType::kF64, DType::kF16, DType::kI32, DType::kI64, DType::kI8, DType::kU8,
                  DType::kBool}) {
    if (NumpyDType(d)->equal(dt)) return d;
  }
  return std::nullopt;
}

// Memory shared both ways: the array views the tensor's storage, and a capsule
// holding a copy of the Tensor keeps that storage alive as long as the array.
py::array ToNumpy(const Tensor& t) {
  QUANTA_CHECK(t.defined(), "numpy: undefined tensor");
  QUANTA_CHECK(t.device().is_cpu(), "numpy: ", t.Describe(), " is not on the cpu; call .to('cpu') first");
  QUANTA_CHECK(!t.requires_grad(), "numpy: ", t.Describe(),
               " requires grad; call .detach().numpy() (the array would not be recorded)");
  std::optional<py::dtype> dt = NumpyDType(t.dtype());
  QUANTA_CHECK(dt.has_value(), "numpy: NumPy has no dtype for ", t.Describe(),
               t.is_quantized() ? "; call .int_repr() or .dequantize()" : "; call .to(quanta.f32)");
  const int64_t item = Info(t.dtype()).bits / 8;
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end()), strides;
  for (int64_t s : t.strides()) strides.push_back(s * item);
  py::capsule owner(new Tensor(t), [](void* p) { delete static_cast<Tensor*>(p); });
  return py::array(*dt, shape, strides, t.numel() == 0 ? nullptr : t.raw_data(), owner);
}

// A tensor over the array's memory: no copy. The tensor holds a reference to
// the array, dropped (under the GIL) when the last tensor viewing it is gone.
Tensor FromNumpy(py::array array) {
  std::optional<DType> dtype = DTypeOfNumpy(array.dtype());
  QUANTA_CHECK(dtype.has_value(), "from_numpy: NumPy dtype ", std::string(py::str(array.dtype())),
               " has no quanta dtype (float32, float64, float16, int64, int32, int8, uint8, bool)");
  Shape shape(array.shape(), array.shape() + array.ndim());
  Strides strides;
  for (py::ssize_t i = 0; i < array.ndim(); ++i) {
    py::ssize_t s = array.strides()[i];
    QUANTA_CHECK(s >= 0 && s % array.itemsize() == 0, "from_numpy: the array's strides (",
                 std::string(py::str(py::cast(std::vector<py::ssize_t>(array.strides(), array.strides() + array.ndim())))),
                 " bytes) are negative or not a multiple of its item size; pass a copy (numpy.ascontiguousarray)");
    strides.push_back(s / array.itemsize());
  }
  PyObject* owner = array.ptr();
  Py_INCREF(owner);
  auto release = [owner] {
    if (!Py_IsInitialized()) return;
    py::gil_scoped_acquire gil;
    Py_DECREF(owner);
  };
  return Tensor::FromBlob(const_cast<void*>(array.data()), shape, strides, *dtype, Device::Cpu(), release);
}

// ---- DLPack (v0.6, Debian's libdlpack-dev) -----------------------------------

struct DLPackExport {
  Tensor tensor;
  std::vector<int64_t> shape, strides;
  DLManagedTensor managed;
};

DLDataType DLTypeOf(DType d) {
  switch (d) {
    case DType::kF32: return {kDLFloat, 32, 1};
    case DType::kF64: return {kDLFloat, 64, 1};
    case DType::kF16: return {kDLFloat, 16, 1};
    case DType::kBF16: return {kDLBfloat, 16, 1};
    case DType::kI32: return {kDLInt, 32, 1};
    case DType::kI64: return {kDLInt, 64, 1};
    case DType::kI8: return {kDLInt, 8, 1};
    case DType::kU8: return {kDLUInt, 8, 1};
    case DType::kBool: return {kDLUInt, 1, 1};  // DLPack 0.6 has no bool code
    default: throw Error(std::string("__dlpack__: DLPack has no dtype for ") + Name(d));
  }
}

DType DTypeOfDL(DLDataType t) {
  QUANTA_CHECK(t.lanes == 1, "from_dlpack: vector types (", int(t.lanes), " lanes) are not supported");
  if (t.code == kDLFloat && t.bits == 32) return DType::kF32;
  if (t.code == kDLFloat && t.bits == 64) return DType::kF64;
  if (t.code == kDLFloat && t.bits == 16) return DType::kF16;
  if (t.code == kDLBfloat && t.bits == 16) return DType::kBF16;
  if (t.code == kDLInt && t.bits == 64) return DType::kI64;
  if (t.code == kDLInt && t.bits == 32) return DType::kI32;
  if (t.code == kDLInt && t.bits == 8) return DType::kI8;
  if (t.code == kDLUInt && t.bits == 8) return DType::kU8;
  if (t.code == kDLUInt && t.bits == 1) return DType::kBool;
  if (t.code == 6 && t.bits == 8) return DType::kBool;  // kDLBool in DLPack >= 0.8
  throw Error("from_dlpack: unsupported DLPack dtype (code " + std::to_string(t.code) + ", " + std::to_string(t.bits) +
              " bits)");
}

py::capsule ToDLPack(const Tensor& t) {
  QUANTA_CHECK(!t.requires_grad(), "__dlpack__: ", t.Describe(), " requires grad; call .detach() first");
  auto* e = new DLPackExport{t, {t.shape().begin(), t.shape().end()}, {t.strides().begin(), t.strides().end()}, {}};
  DLTensor& dl = e->managed.dl_tensor;
  dl.data = t.numel() == 0 ? nullptr : t.raw_data();
  dl.device = t.device().is_cpu() ? DLDevice{kDLCPU, 0} : DLDevice{kDLCUDA, t.device().index};
  dl.ndim = t.dim();
  dl.dtype = DLTypeOf(t.dtype());
  dl.shape = e->shape.data();
  dl.strides = e->strides.data();
  dl.byte_offset = 0;
  e->managed.manager_ctx = e;
  e->managed.deleter = [](DLManagedTensor* m) { delete static_cast<DLPackExport*>(m->manager_ctx); };
  // A consumer renames the capsule "used_dltensor" and calls the deleter itself.
  PyObject* capsule = PyCapsule_New(&e->managed, "dltensor", [](PyObject* c) {
    if (PyCapsule_IsValid(c, "dltensor")) {
      auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(c, "dltensor"));
      m->deleter(m);
    }
  });
  if (capsule == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::capsule>(capsule);
}

Tensor FromDLPack(py::object source) {
  py::object capsule = source;
  if (py::hasattr(source, "__dlpack__")) capsule = source.attr("__dlpack__")();
  QUANTA_CHECK(PyCapsule_IsValid(capsule.ptr(), "dltensor"),
               "from_dlpack: expected an object with __dlpack__ or an unused 'dltensor' capsule");
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  const DLTensor& dl = m->dl_tensor;
  DType dtype = DTypeOfDL(dl.dtype);
  Device device;
  if (dl.device.device_type == kDLCPU) {
    device = Device::Cpu();
  } else if (dl.device.device_type == kDLCUDA) {
    device = Device::Cuda(dl.device.device_id);
  } else {
    throw Error("from_dlpack: device type " + std::to_string(dl.device.device_type) + " is not supported");
  }
  Shape shape(dl.shape, dl.shape + dl.ndim);
  Strides strides = dl.strides ? Strides(dl.strides, dl.strides + dl.ndim) : ContiguousStrides(shape);
  auto release = [m] {
    if (m->deleter == nullptr) return;
    if (Py_IsInitialized()) {
      py::gil_scoped_acquire gil;  // Python producers drop references in their deleters
      m->deleter(m);
    }
  };
  Tensor t = Tensor::FromBlob(static_cast<char*>(dl.data) + dl.byte_offset, shape, strides, dtype, device, release);
  PyCapsule_SetName(capsule.ptr(), "used_dltensor");  // consumed: its destructor leaves it to us
  return t;
}

// ---- indexing ----------------------------------------------------------------

// x[key]: ints select (and drop the dim), slices narrow with a step, None adds a
// dim, ... skips dims, a 1-D integer tensor selects along the dim. A view
// wherever PyTorch gives one.
Tensor Index(const Tensor& x, py::object key) {
  py::tuple items = py::isinstance<py::tuple>(key) ? py::reinterpret_borrow<py::tuple>(key) : py::make_tuple(key);
  int consumed = 0;  // dims of x the key uses
  for (py::handle k : items) {
    if (!k.is_none() && !k.is(py::ellipsis())) ++consumed;
  }
  QUANTA_CHECK(consumed <= x.dim(), "index: ", consumed, " indices for ", x.Describe());
  Tensor t = x;
  int64_t dim = 0;
  for (py::handle k : items) {
    if (k.is_none()) {
      t = t.Unsqueeze(dim++);
    } else if (k.is(py::ellipsis())) {
      dim += x.dim() - consumed;
    } else if (py::isinstance<py::slice>(k)) {
      py::ssize_t start, stop, step, length;
      if (!py::reinterpret_borrow<py::slice>(k).compute(t.size(dim), &start, &stop, &step, &length)) {
        throw py::error_already_set();
      }
      QUANTA_CHECK(step > 0, "index: slice steps must be positive, got ", step);
      t = t.Slice(dim++, start, start + length * step, step);
    } else if (py::isinstance<Tensor>(k)) {
      Tensor index = k.cast<Tensor>();
      QUANTA_CHECK(index.dim() == 1 && IsIntegral(index.dtype()), "index: tensor indices are 1-D integers, got ",
                   index.Describe());
      t = IndexSelect(t, dim++, index);
    } else {
      int64_t i = k.cast<int64_t>();
      int64_t n = t.size(dim);
      QUANTA_CHECK(i >= -n && i < n, "index: ", i, " is out of range for dim ", dim, " of ", t.Describe());
      t = t.Select(dim, i < 0 ? i + n : i);
    }
  }
  return t;
}

std::vector<int64_t> Dims(py::object dim) {
  if (dim.is_none()) return {};
  if (py::isinstance<py::int_>(dim)) return {dim.cast<int64_t>()};
  return dim.cast<std::vector<int64_t>>();
}

Shape ShapeArgs(py::args args) {
  if (args.size() == 1 && !py::isinstance<py::int_>(args[0])) return args[0].cast<Shape>();
  return args.cast<Shape>();
}

Device DeviceOf(const std::string& name) {
  if (name == "cpu") return Device::Cpu();
  if (name == "cuda") return Device::Cuda(0);
  if (name.rfind("cuda:", 0) == 0) return Device::Cuda(std::stoi(name.substr(5)));
  throw Error("device: '" + name + "' is not cpu, cuda or cuda:N");
}

// with quanta.no_grad(): ...
class NoGrad {
 public:
  void Enter() { guard_.emplace(); }
  void Exit(py::args) { guard_.reset(); }

 private:
  std::optional<NoGradGuard> guard_;
};

}  // namespace

void BindTensor(py::module_& m) {
  py::enum_<DType>(m, "dtype", "Element types; quanta.f32 etc. (and PyTorch's names: quanta.float32, ...)")
      .value("f32", DType::kF32)
      .value("f64", DType::kF64)
      .value("f16", DType::kF16)
      .value("bf16", DType::kBF16)
      .value("i32", DType::kI32)
      .value("i64", DType::kI64)
      .value("i8", DType::kI8)
      .value("u8", DType::kU8)
      .value("bool", DType::kBool)
      .value("qint8", DType::kQInt8)
      .value("quint8", DType::kQUInt8)
      .value("qint4", DType::kQInt4)
      .value("f8_e4m3", DType::kF8E4M3)
      .value("f8_e5m2", DType::kF8E5M2)
      .value("f8_e8m0", DType::kF8E8M0)
      .value("f6_e2m3", DType::kF6E2M3)
      .value("f6_e3m2", DType::kF6E3M2)
      .value("f4_e2m1", DType::kF4E2M1)
      .export_values();
  for (auto [alias, d] : {std::pair{"float32", DType::kF32}, {"float", DType::kF32}, {"float64", DType::kF64},
                          {"double", DType::kF64}, {"float16", DType::kF16}, {"half", DType::kF16},
                          {"bfloat16", DType::kBF16}, {"int32", DType::kI32}, {"int64", DType::kI64},
                          {"long", DType::kI64}, {"int8", DType::kI8}, {"uint8", DType::kU8},
                          {"float8_e4m3fn", DType::kF8E4M3}, {"float8_e5m2", DType::kF8E5M2},
                          {"float8_e8m0fnu", DType::kF8E8M0}}) {
    m.attr(alias) = py::cast(d);
  }

  py::class_<Tensor> t(m, "Tensor", py::buffer_protocol(), "A tensor; copies share storage (like torch.Tensor)");
  // The buffer protocol (memoryview, numpy.asarray): the same memory as numpy();
  // the Tensor object the view holds keeps the storage alive.
  t.def_buffer([](Tensor& x) -> py::buffer_info { return ToNumpy(x).request(/*writable=*/true); })
      .def_property_readonly("shape", [](const Tensor& x) { return py::tuple(py::cast(x.shape())); })
      .def("size", [](const Tensor& x, std::optional<int64_t> d) -> py::object {
            return d ? py::cast(x.size(*d)) : py::tuple(py::cast(x.shape()));
          }, py::arg("dim") = py::none())
      .def("stride", [](const Tensor& x) { return py::tuple(py::cast(x.strides())); })
      .def_property_readonly("dtype", &Tensor::dtype)
      .def_property_readonly("device", [](const Tensor& x) { return x.device().ToString(); })
      .def_property_readonly("ndim", &Tensor::dim)
      .def("dim", &Tensor::dim)
      .def("numel", &Tensor::numel)
      .def("__len__", [](const Tensor& x) {
        QUANTA_CHECK(x.dim() > 0, "len: a 0-d tensor has no length");
        return x.size(0);
      })
      .def("is_contiguous", &Tensor::is_contiguous)
      .def_property_readonly("is_quantized", &Tensor::is_quantized)
      .def("data_ptr", [](const Tensor& x) { return reinterpret_cast<uintptr_t>(x.raw_data()); })
      .def("__repr__", &Tensor::ToString)
      .def("__hash__", [](py::object self) { return reinterpret_cast<intptr_t>(self.ptr()); })
      // quantized parameters
      .def("q_scale", [](const Tensor& x) {
        QUANTA_CHECK(x.qparams().scales.size() == 1, "q_scale: ", x.Describe(), " is quantized per channel");
        return x.qparams().scales[0];
      })
      .def("q_zero_point", [](const Tensor& x) {
        QUANTA_CHECK(x.qparams().zero_points.size() == 1, "q_zero_point: ", x.Describe(), " is quantized per channel");
        return x.qparams().zero_points[0];
      })
      .def("q_per_channel_scales", [](const Tensor& x) { return x.qparams().scales; })
      .def("q_per_channel_zero_points", [](const Tensor& x) { return x.qparams().zero_points; })
      .def("q_per_channel_axis", [](const Tensor& x) { return x.qparams().axis; })
      .def("int_repr", [](const Tensor& x) {
        QUANTA_CHECK(x.is_quantized(), "int_repr: ", x.Describe(), " is not quantized");
        std::vector<int32_t> v = x.IntRepr();
        return Tensor::FromVector(v, x.shape()).To(x.dtype() == DType::kQUInt8 ? DType::kU8 : DType::kI8);
      })
      .def("dequantize", [](const Tensor& x) { return Dequantize(x); })
      // views and copies
      .def("reshape", [](const Tensor& x, py::args a) { return x.Reshape(ShapeArgs(a)); })
      .def("view", [](const Tensor& x, py::args a) { return x.View(ShapeArgs(a)); })
      .def("permute", [](const Tensor& x, py::args a) { return x.Permute(ShapeArgs(a)); })
      .def("transpose", &Tensor::Transpose)
      .def_property_readonly("T", [](const Tensor& x) {
        QUANTA_CHECK(x.dim() == 2, ".T: expected a matrix, got ", x.Describe());
        return x.Transpose(0, 1);
      })
      .def("flatten", &Tensor::Flatten, py::arg("start_dim") = 0, py::arg("end_dim") = -1)
      .def("squeeze", [](const Tensor& x, std::optional<int64_t> d) { return d ? x.Squeeze(*d) : x.Squeeze(); },
           py::arg("dim") = py::none())
      .def("unsqueeze", &Tensor::Unsqueeze)
      .def("expand", [](const Tensor& x, py::args a) { return x.Expand(ShapeArgs(a)); })
      .def("narrow", &Tensor::Narrow)
      .def("contiguous", &Tensor::Contiguous)
      .def("clone", &Tensor::Clone)
      .def("to", [](const Tensor& x, DType d) { return x.To(d); })
      .def("to", [](const Tensor& x, const std::string& device) { return x.To(DeviceOf(device)); })
      .def("float", [](const Tensor& x) { return x.To(DType::kF32); })
      .def("double", [](const Tensor& x) { return x.To(DType::kF64); })
      .def("long", [](const Tensor& x) { return x.To(DType::kI64); })
      .def("copy_", [](Tensor& x, const Tensor& src) -> Tensor& {
        x.CopyFrom(src);
        return x;
      })
      .def("fill_", [](Tensor& x, double v) -> Tensor& {
        FillInplace(x, v);
        return x;
      })
      .def("zero_", [](Tensor& x) -> Tensor& {
        FillInplace(x, 0);
        return x;
      })
      .def("__getitem__", &Index)
      .def("__setitem__", [](Tensor& x, py::object key, py::object value) {
        Tensor view = Index(x, key);
        QUANTA_CHECK(view.SharesStorageWith(x), "index assignment: tensor indices make a copy; assign to a view");
        if (py::isinstance<Tensor>(value)) {
          view.CopyFrom(value.cast<Tensor>());
        } else {
          FillInplace(view, value.cast<double>());
        }
      })
      // values
      .def("item", [](const Tensor& x) -> py::object {
        QUANTA_CHECK(x.numel() == 1, "item: ", x.Describe(), " has ", x.numel(), " elements, not 1");
        if (x.dtype() == DType::kBool) return py::bool_(x.item<bool>());
        if (IsIntegral(x.dtype())) return py::int_(x.item<int64_t>());
        return py::float_(x.item<double>());
      })
      .def("tolist", [](const Tensor& x) {
        if (x.dtype() == DType::kBF16) return ToNumpy(x.To(DType::kF32)).attr("tolist")();
        return ToNumpy(x.Detach()).attr("tolist")();
      })
      .def("numpy", &ToNumpy, "The tensor's memory as a NumPy array (no copy)")
      .def("__dlpack__", [](const Tensor& x, py::object /*stream*/) { return ToDLPack(x); },
           py::arg("stream") = py::none())
      .def("__dlpack_device__", [](const Tensor& x) {
        return py::make_tuple(x.device().is_cpu() ? int(kDLCPU) : int(kDLCUDA), x.device().index);
      })
      // autograd
      .def_property("requires_grad", &Tensor::requires_grad,
                    [](Tensor& x, bool r) { x.SetRequiresGrad(r); })
      .def("requires_grad_", [](Tensor& x, bool r) -> Tensor& { return x.SetRequiresGrad(r); },
           py::arg("requires_grad") = true)
      .def_property("grad", [](const Tensor& x) -> py::object {
            Tensor g = x.grad();
            return g.defined() ? py::cast(g) : py::none();
          },
          [](Tensor& x, std::optional<Tensor> g) { x.SetGrad(g ? *g : Tensor()); })
      .def_property_readonly("is_leaf", &Tensor::is_leaf)
      .def("detach", &Tensor::Detach)
      .def("backward", [](const Tensor& x, std::optional<Tensor> gradient, bool retain_graph) {
            py::gil_scoped_release release;
            Backward(x, gradient ? *gradient : Tensor(), retain_graph);
          },
          py::arg("gradient") = py::none(), py::arg("retain_graph") = false)
      // reductions
      .def("sum", [](const Tensor& x, py::object dim, bool keepdim) { return Sum(x, Dims(dim), keepdim); },
           py::arg("dim") = py::none(), py::arg("keepdim") = false)
      .def("mean", [](const Tensor& x, py::object dim, bool keepdim) { return Mean(x, Dims(dim), keepdim); },
           py::arg("dim") = py::none(), py::arg("keepdim") = false)
      .def("max", [](const Tensor& x, py::object dim, bool keepdim) { return Max(x, Dims(dim), keepdim); },
           py::arg("dim") = py::none(), py::arg("keepdim") = false)
      .def("min", [](const Tensor& x, py::object dim, bool keepdim) { return Min(x, Dims(dim), keepdim); },
           py::arg("dim") = py::none(), py::arg("keepdim") = false)
      .def("var", [](const Tensor& x, py::object dim, bool keepdim, int64_t correction) {
            return Var(x, Dims(dim), keepdim, correction);
          },
          py::arg("dim") = py::none(), py::arg("keepdim") = false, py::arg("correction") = 1)
      .def("argmax", [](const Tensor& x, int64_t dim, bool keepdim) { return Argmax(x, dim, keepdim); },
           py::arg("dim"), py::arg("keepdim") = false)
      .def("softmax", [](const Tensor& x, int64_t dim) { return Softmax(x, dim); }, py::arg("dim"))
      .def("log_softmax", [](const Tensor& x, int64_t dim) { return LogSoftmax(x, dim); }, py::arg("dim"))
      .def("clamp", [](const Tensor& x, std::optional<double> lo, std::optional<double> hi) { return Clamp(x, lo, hi); },
           py::arg("min") = py::none(), py::arg("max") = py::none())
      .def("matmul", [](const Tensor& a, const Tensor& b) { return Matmul(a, b); })
      .def("pow", [](const Tensor& a, double e) { return Pow(a, e); })
      // operators: a tensor or a number on either side
      .def("__neg__", [](const Tensor& a) { return Neg(a); })
      .def("__abs__", [](const Tensor& a) { return Abs(a); })
      .def("__matmul__", [](const Tensor& a, const Tensor& b) {
        py::gil_scoped_release release;
        return Matmul(a, b);
      })
      .def("__pow__", [](const Tensor& a, double e) { return Pow(a, e); })
      .def("__pow__", [](const Tensor& a, const Tensor& e) { return Pow(a, e); })
      .def("__radd__", [](const Tensor& a, double b) { return Add(a, b); })
      .def("__rmul__", [](const Tensor& a, double b) { return Mul(a, b); })
      .def("__rsub__", [](const Tensor& a, double b) { return Sub(Scalar(b, a.dtype(), a.device()), a); })
      .def("__rtruediv__", [](const Tensor& a, double b) { return Div(Scalar(b, a.dtype(), a.device()), a); });
#define QUANTA_PY_BINARY(py_name, fn)                                                  \
  t.def(py_name, [](const Tensor& a, const Tensor& b) { return fn(a, b); });           \
  t.def(py_name, [](const Tensor& a, double b) { return fn(a, b); });
  QUANTA_PY_BINARY("__add__", Add)
  QUANTA_PY_BINARY("__sub__", Sub)
  QUANTA_PY_BINARY("__mul__", Mul)
  QUANTA_PY_BINARY("__truediv__", Div)
  QUANTA_PY_BINARY("__eq__", Eq)
  QUANTA_PY_BINARY("__ne__", Ne)
  QUANTA_PY_BINARY("__lt__", Lt)
  QUANTA_PY_BINARY("__le__", Le)
  QUANTA_PY_BINARY("__gt__", Gt)
  QUANTA_PY_BINARY("__ge__", Ge)
  QUANTA_PY_BINARY("add", Add)
  QUANTA_PY_BINARY("sub", Sub)
  QUANTA_PY_BINARY("mul", Mul)
  QUANTA_PY_BINARY("div", Div)
  QUANTA_PY_BINARY("maximum", Maximum)
  QUANTA_PY_BINARY("minimum", Minimum)
#undef QUANTA_PY_BINARY
#define QUANTA_PY_INPLACE(py_name, fn)                                                          \
  t.def(py_name, [](Tensor& a, const Tensor& b) -> Tensor& { return fn##Inplace(a, b); });      \
  t.def(py_name, [](Tensor& a, double b) -> Tensor& {                                           \
    return fn##Inplace(a, Scalar(b, a.dtype(), a.device()));                                    \
  });
  QUANTA_PY_INPLACE("__iadd__", Add)
  QUANTA_PY_INPLACE("__isub__", Sub)
  QUANTA_PY_INPLACE("__imul__", Mul)
  QUANTA_PY_INPLACE("__itruediv__", Div)
  QUANTA_PY_INPLACE("add_", Add)
  QUANTA_PY_INPLACE("sub_", Sub)
  QUANTA_PY_INPLACE("mul_", Mul)
  QUANTA_PY_INPLACE("div_", Div)
#undef QUANTA_PY_INPLACE
#define QUANTA_PY_UNARY(Name, str)                                   \
  t.def(str, [](const Tensor& x) { return Name(x); });               \
  m.def(str, [](const Tensor& x) { return Name(x); }, py::arg("input"));
  QUANTA_UNARY_OPS(QUANTA_PY_UNARY)
#undef QUANTA_PY_UNARY

  // creation
  m.def("from_numpy", &FromNumpy, py::arg("array"), "A tensor sharing the array's memory (no copy)");
  m.def("from_dlpack", &FromDLPack, py::arg("source"),
        "A tensor sharing the memory of an object with __dlpack__ (NumPy, PyTorch) or of a DLPack capsule");
  m.def("zeros", [](py::args a, DType dtype) { return Zeros(ShapeArgs(a), dtype); },
        py::arg("dtype") = DType::kF32);
  m.def("ones", [](py::args a, DType dtype) { return Ones(ShapeArgs(a), dtype); },
        py::arg("dtype") = DType::kF32);
  m.def("full", [](const Shape& shape, double value, DType dtype) { return Full(shape, value, dtype); },
        py::arg("size"), py::arg("fill_value"), py::arg("dtype") = DType::kF32);
  m.def("zeros_like", &ZerosLike);
  m.def("ones_like", &OnesLike);
  m.def("arange", [](double start, std::optional<double> end, double step, DType dtype) {
          return end ? Arange(start, *end, step, dtype) : Arange(0, start, step, dtype);
        },
        py::arg("start"), py::arg("end") = py::none(), py::arg("step") = 1, py::arg("dtype") = DType::kF32);
  m.def("eye", [](int64_t n, DType dtype) { return Eye(n, dtype); }, py::arg("n"), py::arg("dtype") = DType::kF32);
  m.def("manual_seed", [](uint64_t seed) { ManualSeed(seed); }, py::arg("seed"));
  m.def("rand", [](py::args a, DType dtype) { return Uniform(ShapeArgs(a), 0, 1, nullptr, dtype); },
        py::arg("dtype") = DType::kF32);
  m.def("randn", [](py::args a, DType dtype) { return Normal(ShapeArgs(a), 0, 1, nullptr, dtype); },
        py::arg("dtype") = DType::kF32);
  // ops beyond the methods
  m.def("matmul", [](const Tensor& a, const Tensor& b) {
    py::gil_scoped_release release;
    return Matmul(a, b);
  });
  m.def("cat", &Concat, py::arg("tensors"), py::arg("dim") = 0);
  m.def("stack", &Stack, py::arg("tensors"), py::arg("dim") = 0);
  m.def("where", &Where, py::arg("condition"), py::arg("input"), py::arg("other"));
  m.def("softmax", [](const Tensor& x, int64_t dim) { return Softmax(x, dim); }, py::arg("input"), py::arg("dim"));
  m.def("log_softmax", [](const Tensor& x, int64_t dim) { return LogSoftmax(x, dim); }, py::arg("input"),
        py::arg("dim"));
  m.def("conv2d",
        [](const Tensor& x, const Tensor& w, std::optional<Tensor> b, std::pair<int64_t, int64_t> stride,
           std::pair<int64_t, int64_t> padding, std::pair<int64_t, int64_t> dilation, int64_t groups) {
          Conv2dOptions o{.stride = {stride.first, stride.second}, .padding = {padding.first, padding.second},
                          .dilation = {dilation.first, dilation.second}, .groups = groups};
          py::gil_scoped_release release;
          return Conv2d(x, w, b ? *b : Tensor(), o);
        },
        py::arg("input"), py::arg("weight"), py::arg("bias") = py::none(), py::arg("stride") = std::pair{1, 1},
        py::arg("padding") = std::pair{0, 0}, py::arg("dilation") = std::pair{1, 1}, py::arg("groups") = 1);
  // quantization (core/scalar_ops.h's formula)
  m.def("quantize_per_tensor", [](const Tensor& x, double scale, int64_t zero_point, DType dtype) {
          return Quantize(x, dtype, QuantParams::PerTensor(scale, zero_point));
        },
        py::arg("input"), py::arg("scale"), py::arg("zero_point"), py::arg("dtype"));
  m.def("quantize_per_channel",
        [](const Tensor& x, std::vector<double> scales, std::vector<int64_t> zero_points, int64_t axis, DType dtype) {
          return Quantize(x, dtype, QuantParams::PerChannel(scales, zero_points, axis));
        },
        py::arg("input"), py::arg("scales"), py::arg("zero_points"), py::arg("axis"), py::arg("dtype"));
  // autograd and threads
  py::class_<NoGrad>(m, "no_grad", "with quanta.no_grad(): ops inside are not recorded for autograd")
      .def(py::init<>())
      .def("__enter__", &NoGrad::Enter)
      .def("__exit__", &NoGrad::Exit);
  m.def("is_grad_enabled", &GradModeEnabled);
  m.def("set_num_threads", &SetNumThreads, py::arg("threads"));
  m.def("get_num_threads", &GetNumThreads);
}

}  // namespace quanta::python

// The extension module quanta._C: one PYBIND11_MODULE that binds the packages
// in layer order, and the exceptions (Note [Errors across the boundary]).
#include <string>

#include "python/src/common.h"

namespace quanta::python {

void RaiseIfError(const absl::Status& status) {
  if (status.ok()) return;
  std::string message(status.message());
  PyObject* type = PyExc_RuntimeError;
  switch (status.code()) {
    case absl::StatusCode::kNotFound: type = PyExc_FileNotFoundError; break;
    case absl::StatusCode::kPermissionDenied: type = PyExc_PermissionError; break;
    case absl::StatusCode::kAlreadyExists: type = PyExc_FileExistsError; break;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: type = PyExc_ValueError; break;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown: type = PyExc_OSError; break;
    default: break;
  }
  PyErr_SetString(type, message.c_str());
  throw py::error_already_set();
}

}  // namespace quanta::python

PYBIND11_MODULE(_C, m) {
  namespace py = pybind11;
  m.doc() = "Quanta: a deep-learning framework where quantization is part of the tensor, the module and training";
  py::register_exception<quanta::Error>(m, "Error", PyExc_ValueError);
  quanta::python::BindTensor(m);
  quanta::python::BindNn(m);
  quanta::python::BindData(m);
  quanta::python::BindQuant(m);
}

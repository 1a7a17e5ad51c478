// What the binding files share: the pybind11 headers, the one place a Status
// becomes a Python exception, and the binders module.cc calls in order.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "nn/optim.h"

namespace quanta::python {

namespace py = pybind11;

// Note [Errors across the boundary]: misuse of the API throws quanta::Error in
// C++, which becomes quanta.Error (a ValueError) with the same message
// (module.cc registers it). Reading outside data returns a Status; RaiseIfError
// turns a failed one into the Python exception a Python user expects: a missing
// file FileNotFoundError, no permission PermissionError, a bad file or value
// ValueError, other I/O failures OSError. The message names the file.
void RaiseIfError(const absl::Status& status);

template <typename T>
T ValueOrRaise(absl::StatusOr<T> value) {
  RaiseIfError(value.status());
  return std::move(*value);
}

// Parameter groups as PyTorch shows them: a list of {"params", "lr_mult",
// "weight_decay", "name"} dicts (nn.cc).
py::list GroupsToList(const std::vector<nn::ParamGroup>& groups);

void BindTensor(py::module_& m);  // tensor.cc: Tensor, dtypes, ops, NumPy, DLPack, autograd
void BindNn(py::module_& m);      // nn.cc: modules, layers, losses, optimizers, schedules, checkpoints, models
void BindData(py::module_& m);    // data.cc: readers, transforms, DataLoader
void BindQuant(py::module_& m);   // quant.cc: policies, QAT, calibration, conversion, export

}  // namespace quanta::python

// ONNX export of an IntegerModel in QDQ form (opset 13): every integer layer
// becomes DequantizeLinear on its input and on its int8 weight (per channel),
// Conv or Gemm in float, the fused Add/Relu, and QuantizeLinear on its output,
// the form ONNX Runtime and TensorRT fold back into integer kernels. Checked by
// ONNX's own checker and strict shape inference before anything is written.
// Not an ONNX importer, and not a runtime.
//
//   auto q = quant::Convert(*net);
//   absl::Status s = quant::ExportOnnx(*q, "resnet20.int8.onnx", {1, 3, 32, 32});
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/shape.h"
#include "quant/integer_model.h"

namespace quanta::quant {

// The serialized ModelProto, checked. input_shape's first dim is exported as a
// symbolic "batch". Errors say which node or check failed.
absl::StatusOr<std::string> OnnxBytes(const IntegerModel& model, const Shape& input_shape);
// OnnxBytes written atomically to path.
absl::Status ExportOnnx(const IntegerModel& model, const std::string& path, const Shape& input_shape);
// Runs ONNX's checker (and strict shape inference) over serialized bytes; for
// tests and for files from elsewhere.
absl::Status CheckOnnx(const std::string& bytes);

}  // namespace quanta::quant

// ONNX export of an IntegerModel in QDQ form (opset 13): every integer layer
// becomes DequantizeLinear on its input and on its int8 weight (per channel),
// Conv or Gemm in float, the fused Add/Relu, and QuantizeLinear on its output,
// the form ONNX Runtime and TensorRT fold back into integer kernels. Checked by
// ONNX's own checker and strict shape inference before anything is written.
// A model with block-format layers (MX, NVFP4) goes out at opset 21 instead:
// blocked DequantizeLinear for their weights, their activations' run-time block
// scales as ordinary ops (Note [Block formats in ONNX] in onnx_export.cc).
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

// The serialized ModelProto, checked (block models: by ONNX Runtime as it loads
// them; Debian's ONNX checker stops at opset 17). input_shape's first dim is
// exported as a symbolic "batch". Errors say which node or check failed.
absl::StatusOr<std::string> OnnxBytes(const IntegerModel& model, const Shape& input_shape);
// OnnxBytes written atomically to path.
absl::Status ExportOnnx(const IntegerModel& model, const std::string& path, const Shape& input_shape);
// What ExportOnnx writes for this model, for messages: "ONNX QDQ, opset 13,
// checked", or the block-format form.
std::string OnnxForm(const IntegerModel& model);
// Runs ONNX's checker (and strict shape inference) over serialized bytes; for
// tests and for files from elsewhere.
absl::Status CheckOnnx(const std::string& bytes);

}  // namespace quanta::quant

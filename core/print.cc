// Readable printing: tensor([[1, 2], [3, 4]], dtype=f32). Large tensors show the
// first and last three entries of each dim; quantized tensors show their integer
// values and their parameters.
#include <ostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/tensor.h"

namespace quanta {
namespace {

constexpr int64_t kSummarizeAbove = 1000;
constexpr int64_t kEdgeItems = 3;

std::string FormatValue(double v, bool floating) {
  if (!floating) return absl::StrFormat("%.0f", v);
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return absl::StrFormat("%.4f", v);
}

void PrintDim(std::ostream& os, const std::vector<double>& values, const Shape& shape,
              const Strides& strides, int d, int64_t base, bool summarize, bool floating,
              int indent) {
  if (d == static_cast<int>(shape.size())) {
    os << FormatValue(values[base], floating);
    return;
  }
  os << "[";
  int64_t n = shape[d];
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 2 * kEdgeItems && i == kEdgeItems) {
      os << "...";
      i = n - kEdgeItems - 1;
      os << (d + 1 == static_cast<int>(shape.size()) ? ", " : ",\n" + std::string(indent + 1, ' '));
      continue;
    }
    PrintDim(os, values, shape, strides, d + 1, base + i * strides[d], summarize, floating,
             indent + 1);
    if (i + 1 < n) {
      os << (d + 1 == static_cast<int>(shape.size()) ? ", " : ",\n" + std::string(indent + 1, ' '));
    }
  }
  os << "]";
}

}  // namespace

std::string QuantParams::ToString() const {
  if (scheme == QScheme::kPerTensor) {
    return absl::StrCat("scale=", scales[0], ", zero_point=", zero_points[0]);
  }
  return absl::StrCat("axis=", axis, ", scales=[", absl::StrJoin(scales, ", "),
                      "], zero_points=[", absl::StrJoin(zero_points, ", "), "]");
}

std::string Tensor::ToString() const {
  if (!defined()) return "tensor(undefined)";
  std::vector<double> values;
  if (is_quantized()) {
    std::vector<int32_t> ints = IntRepr();
    values.assign(ints.begin(), ints.end());
  } else {
    values = ToVector<double>();
  }
  std::ostringstream os;
  os << "tensor(";
  bool floating = IsFloating(dtype_);
  PrintDim(os, values, shape_, ContiguousStrides(shape_), 0, 0, numel() > kSummarizeAbove,
           floating, 7);
  os << ", dtype=" << Name(dtype_);
  if (is_quantized()) os << ", " << qparams_->ToString();
  if (!device().is_cpu()) os << ", device=" << device().ToString();
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.ToString(); }

}  // namespace quanta

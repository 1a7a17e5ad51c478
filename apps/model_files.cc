#include "apps/model_files.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace quanta::apps {

std::string UserPath(const std::string& path) {
  const char* wd = std::getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || wd == nullptr) return path;
  return std::string(wd) + "/" + path;
}

absl::StatusOr<ModelFile> ReadModelFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  ModelFile f;
  f.path = path;
  f.bytes = static_cast<int64_t>(std::filesystem::file_size(path, ec));
  absl::StatusOr<Safetensors> st = LoadSafetensors(path);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        st.status().message(), " (Quanta's model files are safetensors: an integer model from //apps:train "
                               "--checkpoint_dir or IntegerModel::Save, or a checkpoint)"));
  }
  if (st->metadata.count("quanta.format")) {
    absl::StatusOr<std::shared_ptr<quant::IntegerModel>> m = quant::IntegerModel::Load(path);
    if (!m.ok()) return m.status();
    f.integer = *m;
    return f;
  }
  f.checkpoint = std::move(*st);
  return f;
}

absl::StatusOr<Shape> ParseShape(const std::string& text) {
  Shape shape;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(part, &d) || d <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("shape '", text, "': expected positive integers separated by commas, e.g. 1,3,32,32"));
    }
    shape.push_back(d);
  }
  return shape;
}

absl::StatusOr<Shape> SavedInputShape(const quant::IntegerModel& model, const std::string& path) {
  auto it = model.metadata().find("input_shape");
  if (it == model.metadata().end()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the file does not say its input shape; pass --input_shape=N,C,H,W"));
  }
  absl::StatusOr<Shape> s = ParseShape(it->second);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": metadata input_shape: ", s.status().message()));
  return s;
}

namespace {

std::string Range(const std::vector<double>& v) {
  if (v.empty()) return "-";
  auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return *lo == *hi ? absl::StrFormat("%.4g", *lo) : absl::StrFormat("%.4g..%.4g", *lo, *hi);
}

std::string DescribeInteger(const ModelFile& f) {
  const quant::IntegerModel& m = *f.integer;
  std::string out = absl::StrFormat("%s: a Quanta integer model, %d nodes, %d bytes of weights and parameters (%d on disk)\n",
                                    f.path, m.nodes().size(), m.Bytes(), f.bytes);
  for (const auto& [k, v] : m.metadata()) absl::StrAppendFormat(&out, "  %s: %s\n", k, v);
  absl::StrAppendFormat(&out, "\n%-4s %-16s %-26s %-6s %-22s %-22s %-10s %s\n", "#", "kind", "name", "bits", "weight",
                        "weight scales", "output", "output scale / zero point");
  std::map<int, int> weight_bits;
  for (size_t i = 0; i < m.nodes().size(); ++i) {
    const quant::IntegerNode& n = m.node(i);
    std::string bits, weight = "", wscales = "";
    if (n.weight.defined()) {
      bits = absl::StrCat("W", n.weight_bits, "A", n.act_bits);
      weight = absl::StrCat(Name(n.weight.dtype()), "[", absl::StrJoin(n.weight.shape(), ","), "]");
      wscales = n.weight.is_quantized() ? Range(n.weight.qparams().scales) : "f32";
      ++weight_bits[n.weight_bits];
    }
    std::string outq = n.out_dtype == DType::kF32
                           ? ""
                           : absl::StrFormat("%.4g / %d", n.out_params.scales[0], n.out_params.zero_points[0]);
    std::string extra = absl::StrCat(n.relu ? " +relu" : "", n.residual >= 0 ? absl::StrCat(" +residual(", n.residual, ")") : "");
    absl::StrAppendFormat(&out, "%-4d %-16s %-26s %-6s %-22s %-22s %-10s %s%s\n", i, quant::NodeKindName(n.kind), n.name,
                          bits, weight, wscales, Name(n.out_dtype), outq, extra);
  }
  std::vector<std::string> counts;
  for (const auto& [b, k] : weight_bits) counts.push_back(absl::StrCat(k, " at ", b, " bits"));
  absl::StrAppend(&out, "\nweighted layers: ", absl::StrJoin(counts, ", "), "\n");
  return out;
}

std::string DescribeCheckpoint(const ModelFile& f) {
  const Safetensors& s = f.checkpoint;
  int64_t params = 0, optimizer = 0, quantizers = 0;
  for (const auto& [name, t] : s.tensors) {
    bool is_optimizer = name.rfind("optimizer.", 0) == 0;
    bool is_quant = name.find("_quant.") != std::string::npos;
    (is_optimizer ? optimizer : is_quant ? quantizers : params) += t.numel();
  }
  bool checkpoint = std::any_of(s.tensors.begin(), s.tensors.end(),
                                [](const auto& kv) { return kv.first.rfind("model.", 0) == 0; });
  std::string out = absl::StrFormat(
      "%s: %s, %d tensors, %d bytes on disk\n  model values: %d; quantizer state: %d; optimizer state: %d\n", f.path,
      checkpoint ? "a Quanta training checkpoint (nn::SaveCheckpoint)" : "a safetensors file", s.tensors.size(), f.bytes,
      params, quantizers, optimizer);
  for (const auto& [k, v] : s.metadata) absl::StrAppendFormat(&out, "  %s: %s\n", k, v);
  absl::StrAppendFormat(&out, "\n%-56s %-6s %s\n", "tensor", "dtype", "shape");
  for (const auto& [name, t] : s.tensors) {
    if (name.rfind("optimizer.", 0) == 0) continue;  // counted above
    absl::StrAppendFormat(&out, "%-56s %-6s [%s]\n", name, Name(t.dtype()), absl::StrJoin(t.shape(), ", "));
  }
  return out;
}

}  // namespace

std::string Describe(const ModelFile& file) { return file.integer ? DescribeInteger(file) : DescribeCheckpoint(file); }

}  // namespace quanta::apps

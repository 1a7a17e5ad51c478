// IntegerModel: node checks, the forward pass, and the file format.
#include "quant/integer_model.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "nn/safetensors.h"
#include "quant/quantizer.h"

namespace quanta::quant {
namespace {

constexpr NodeKind kKinds[] = {NodeKind::kInput,     NodeKind::kQuantize,      NodeKind::kDequantize,
                               NodeKind::kConv2d,    NodeKind::kLinear,        NodeKind::kMaxPool2d,
                               NodeKind::kGlobalAvgPool, NodeKind::kFlatten,   NodeKind::kShortcutPad};

bool HasWeights(NodeKind k) { return k == NodeKind::kConv2d || k == NodeKind::kLinear; }

// 4-D quantized values live channels-last (Note [Integer model values]).
Tensor QuantizeKeepLayout(const Tensor& x, DType dtype, const QuantParams& p) {
  auto q = [&](const Tensor& t) { return t.is_quantized() ? Requantize(t, dtype, p) : Quantize(t, dtype, p); };
  return x.dim() == 4 ? q(x.Permute({0, 2, 3, 1})).Permute({0, 3, 1, 2}) : q(x);
}

Tensor Real(const Tensor& x) {
  if (!x.is_quantized()) return x;
  return x.dim() == 4 ? Dequantize(x.Permute({0, 2, 3, 1})).Permute({0, 3, 1, 2}) : Dequantize(x);
}

std::string Ints(std::initializer_list<int64_t> v) { return absl::StrJoin(v, ","); }

}  // namespace

const char* NodeKindName(NodeKind kind) {
  switch (kind) {
    case NodeKind::kInput: return "input";
    case NodeKind::kQuantize: return "quantize";
    case NodeKind::kDequantize: return "dequantize";
    case NodeKind::kConv2d: return "conv2d";
    case NodeKind::kLinear: return "linear";
    case NodeKind::kMaxPool2d: return "max_pool2d";
    case NodeKind::kGlobalAvgPool: return "global_avg_pool";
    case NodeKind::kFlatten: return "flatten";
    case NodeKind::kShortcutPad: return "shortcut_pad";
  }
  return "?";
}

IntegerModel::IntegerModel() {
  nodes_.push_back(IntegerNode{.kind = NodeKind::kInput, .name = "input"});
  last_use_.push_back(0);
}

int IntegerModel::Add(IntegerNode n) {
  int index = static_cast<int>(nodes_.size());
  std::string what = absl::StrCat("integer_model: node ", index, " (", NodeKindName(n.kind), " ", n.name, ")");
  QUANTA_CHECK(n.kind != NodeKind::kInput, what, ": only node 0 is the input");
  QUANTA_CHECK(n.inputs.size() == 1, what, ": takes one input, got ", n.inputs.size());
  for (int i : n.inputs) QUANTA_CHECK(i >= 0 && i < index, what, ": reads node ", i, ", not an earlier node");
  QUANTA_CHECK(n.residual == -1 || (HasWeights(n.kind) && n.residual >= 0 && n.residual < index), what,
               ": bad residual node ", n.residual);
  bool quantized_out = n.out_dtype == DType::kQInt8 || n.out_dtype == DType::kQUInt8;
  QUANTA_CHECK(n.out_dtype == DType::kF32 || (quantized_out && n.out_params.scheme == QScheme::kPerTensor &&
                                              n.out_params.scales.size() == 1 && n.out_params.scales[0] > 0),
               what, ": output is f32 or per-tensor qint8/quint8, got ", Name(n.out_dtype));
  if (n.block) {
    QUANTA_CHECK(n.kind == NodeKind::kQuantize || HasWeights(n.kind), what, ": only quantize and weighted nodes take a ",
                 "block format");
    QUANTA_CHECK(n.kind != NodeKind::kQuantize || n.out_dtype == DType::kF32, what,
                 ": a block-format quantize node has an f32 output");
    QUANTA_CHECK(!HasWeights(n.kind) || (n.weight.defined() && n.weight.dtype() == DType::kF32 &&
                                         n.weight_blocks.codes.defined() && n.weight_blocks.format == *n.block),
                 what, ": a block-format layer needs its blocks in ", BlockFormatName(*n.block), " and its f32 weight");
  } else {
    QUANTA_CHECK(n.kind != NodeKind::kQuantize || quantized_out, what, ": quantizes to qint8/quint8 or a block format");
  }
  if (HasWeights(n.kind)) {
    const Tensor& w = n.weight;
    QUANTA_CHECK(w.defined() && (w.dtype() == DType::kQInt8 || w.dtype() == DType::kQInt4 || w.dtype() == DType::kF32) &&
                     w.dim() == (n.kind == NodeKind::kConv2d ? 4 : 2),
                 what, ": needs qint8/qint4/f32 weights of rank ", n.kind == NodeKind::kConv2d ? 4 : 2,
                 w.defined() ? ", got " + w.Describe() : ", got none");
    QUANTA_CHECK(w.dtype() != DType::kF32 || n.out_dtype == DType::kF32 || n.block, what,
                 ": a float layer has an f32 output");
    int64_t channels = n.kind == NodeKind::kConv2d ? w.size(0) : w.size(1);
    QUANTA_CHECK(!n.bias.defined() || (n.bias.dtype() == DType::kF32 && n.bias.numel() == channels), what,
                 ": bias must be f32 (", channels, ")");
    // Integer models never change their weights: oneDNN may keep them reordered.
    w.storage()->MarkConstant();
  } else {
    QUANTA_CHECK(n.kind == NodeKind::kQuantize || !quantized_out || n.kind == NodeKind::kMaxPool2d ||
                     n.kind == NodeKind::kFlatten,
                 what, ": cannot produce a quantized output");
  }
  for (int i : n.inputs) last_use_[i] = index;
  if (n.residual >= 0) last_use_[n.residual] = index;
  nodes_.push_back(std::move(n));
  last_use_.push_back(index);
  return index;
}

void IntegerModel::MoveTo(const Device& device) {
  for (IntegerNode& n : nodes_) {
    for (Tensor* t : {&n.weight, &n.bias}) {
      if (t->defined() && t->device() != device) {
        *t = t->To(device);
        if (t->storage()) t->storage()->MarkConstant();
      }
    }
  }
}

Tensor IntegerModel::Forward(const Tensor& x) {
  QUANTA_CHECK(nodes_.size() > 1, "integer_model: empty model (only an input)");
  QUANTA_CHECK(x.dtype() == DType::kF32, "integer_model: the input must be f32, got ", x.Describe());
  NoGradGuard no_grad;
  std::vector<Tensor> v(nodes_.size());
  v[0] = x;
  for (size_t i = 1; i < nodes_.size(); ++i) {
    const IntegerNode& n = nodes_[i];
    const Tensor& in = v[n.inputs[0]];
    switch (n.kind) {
      case NodeKind::kInput: break;
      case NodeKind::kQuantize:
        v[i] = n.block ? BlockFakeQuantizeActivation(Real(in), *n.block)
                       : QuantizeKeepLayout(in, n.out_dtype, n.out_params);
        break;
      case NodeKind::kDequantize: v[i] = Real(in); break;
      case NodeKind::kConv2d:
      case NodeKind::kLinear: {
        if (n.weight.dtype() == DType::kF32) {  // a float layer (ConvertFloat)
          Tensor y = n.kind == NodeKind::kConv2d ? Conv2d(Real(in), n.weight, n.bias, n.conv) : Matmul(Real(in), n.weight);
          if (n.kind == NodeKind::kLinear && n.bias.defined()) y = quanta::Add(y, n.bias);
          if (n.residual >= 0) y = quanta::Add(y, Real(v[n.residual]));
          if (n.relu) y = Relu(y);
          // A block-format layer read by an integer layer: quantized for it.
          v[i] = n.out_dtype == DType::kF32 ? y : QuantizeKeepLayout(y, n.out_dtype, n.out_params);
          break;
        }
        QUANTA_CHECK(in.is_quantized(), "integer_model: ", n.name, " needs a quantized input, got ", in.Describe());
        IntegerPostOps post{.residual = n.residual >= 0 ? v[n.residual] : Tensor(), .relu = n.relu};
        const QuantParams* out = n.out_dtype == DType::kF32 ? nullptr : &n.out_params;
        v[i] = n.kind == NodeKind::kConv2d ? QuantizedConv2d(in, n.weight, n.bias, n.conv, n.out_dtype, out, post)
                                           : QuantizedMatmul(in, n.weight, n.bias, n.out_dtype, out, post);
        break;
      }
      case NodeKind::kMaxPool2d:
        // Max commutes with the (monotone) quantization: pooled on the integers.
        v[i] = MaxPool2d(in, n.pool);  // channels-last in, channels-last out
        break;
      case NodeKind::kGlobalAvgPool: {
        // Over the channels-last memory as (N, H*W, C): the reduction reads rows of C.
        Tensor r = Real(in);
        v[i] = r.is_channels_last() && !r.is_contiguous()
                   ? Mean(r.Permute({0, 2, 3, 1}).Reshape({r.size(0), r.size(2) * r.size(3), r.size(1)}), {1})
                   : Mean(r, {2, 3});
        break;
      }
      case NodeKind::kFlatten: v[i] = in.Reshape({in.size(0), -1}); break;
      case NodeKind::kShortcutPad: {
        // Subsampled, into a channels-last value that the next convolution reads
        // as its residual with no layout change; the padded channels are real
        // zeros. Note [Quantized shortcuts] in integer_model.h: a quantized
        // input whose zero point is in range stays quantized.
        Tensor s = in.Slice(2, 0, in.size(2), n.stride).Slice(3, 0, in.size(3), n.stride);
        const Shape nhwc_shape = {s.size(0), s.size(2), s.size(3), n.pad_before + s.size(1) + n.pad_after};
        Tensor nhwc;
        const bool zero_in_range = s.is_quantized() && s.qparams().scheme == QScheme::kPerTensor && [&] {
          auto [qmin, qmax] = QuantRange(s.dtype(), s.qparams());
          return qmin <= s.qparams().zero_points[0] && s.qparams().zero_points[0] <= qmax;
        }();
        if (zero_in_range) {
          nhwc = Tensor::Empty(nhwc_shape, s.dtype(), s.device(), s.qparams());
          // The zero point everywhere (one dense run), then the channels between.
          nhwc.CopyFrom(Quantize(Zeros({1, 1, 1, 1}, DType::kF32, s.device()), s.dtype(), s.qparams()));
          nhwc.Narrow(3, n.pad_before, s.size(1)).CopyFrom(s.Permute({0, 2, 3, 1}));
        } else {
          nhwc = Zeros(nhwc_shape, DType::kF32, s.device());
          nhwc.Narrow(3, n.pad_before, s.size(1)).CopyFrom(Real(s).Permute({0, 2, 3, 1}));
        }
        v[i] = nhwc.Permute({0, 3, 1, 2});
        break;
      }
    }
    for (int j : n.inputs) {
      if (last_use_[j] == static_cast<int>(i)) v[j] = Tensor();  // free what no later node reads
    }
  }
  return v.back();
}

int64_t IntegerModel::MultiplyAdds(const Shape& input) const {
  std::vector<Shape> shape(nodes_.size());
  shape[0] = input;
  int64_t macs = 0;
  auto out_size = [](int64_t size, int64_t k, int64_t stride, int64_t pad, int64_t dilation) {
    return (size + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
  };
  for (size_t i = 1; i < nodes_.size(); ++i) {
    const IntegerNode& n = nodes_[i];
    const Shape& in = shape[n.inputs[0]];
    auto need_rank = [&](size_t rank) {
      QUANTA_CHECK(in.size() == rank, "integer_model: multiply_adds: node ", i, " (", NodeKindName(n.kind), " ", n.name,
                   ") reads ", ShapeToString(in), ", not rank ", rank);
    };
    switch (n.kind) {
      case NodeKind::kInput:
      case NodeKind::kQuantize:
      case NodeKind::kDequantize: shape[i] = in; break;
      case NodeKind::kConv2d: {
        need_rank(4);
        const Shape& w = n.weight.shape();  // (O, C/G, KH, KW)
        int64_t oh = out_size(in[2], w[2], n.conv.stride[0], n.conv.padding[0], n.conv.dilation[0]);
        int64_t ow = out_size(in[3], w[3], n.conv.stride[1], n.conv.padding[1], n.conv.dilation[1]);
        macs += in[0] * w[0] * w[1] * w[2] * w[3] * oh * ow;
        shape[i] = {in[0], w[0], oh, ow};
        break;
      }
      case NodeKind::kLinear: {  // weight (K, N), input (..., K)
        int64_t rows = NumElements(in) / in.back();
        macs += rows * n.weight.size(0) * n.weight.size(1);
        shape[i] = in;
        shape[i].back() = n.weight.size(1);
        break;
      }
      case NodeKind::kMaxPool2d: {
        need_rank(4);
        shape[i] = in;
        for (int d = 0; d < 2; ++d) {
          int64_t stride = n.pool.stride[d] > 0 ? n.pool.stride[d] : n.pool.kernel[d];
          shape[i][2 + d] = out_size(in[2 + d], n.pool.kernel[d], stride, n.pool.padding[d], n.pool.dilation[d]);
        }
        break;
      }
      case NodeKind::kGlobalAvgPool: need_rank(4); shape[i] = {in[0], in[1]}; break;
      case NodeKind::kFlatten: shape[i] = {in[0], NumElements(in) / in[0]}; break;
      case NodeKind::kShortcutPad:
        need_rank(4);
        shape[i] = {in[0], n.pad_before + in[1] + n.pad_after, (in[2] + n.stride - 1) / n.stride,
                    (in[3] + n.stride - 1) / n.stride};
        break;
    }
  }
  return macs;
}

namespace {

// Note [Codebook weights]: a layer the policy gave at most 4 weight bits is
// stored as b-bit indices into a sorted codebook of its distinct integers, b
// the fewest bits that index them (2-bit LSQ's four values and APoT's ternary
// levels: 2 bits; 3-bit: 3; APoT's 4-bit levels, which span [-10, 10] beyond
// qint4: 4). The indices are one bit stream, low bits first: weight i starts
// at bit i * b. Loading decodes them back to the layer's qint8/qint4 integers,
// so the kernels see the same values. Files from before the bit width was
// written ("wcodes" without "wpack") hold 4-bit indices. Empty: stored as it is.
std::vector<int32_t> CodebookOf(const IntegerNode& n) {
  if (n.weight.dtype() != DType::kQInt8 && n.weight.dtype() != DType::kQInt4) return {};
  if (n.weight_bits < 1 || n.weight_bits > 4) return {};  // 0: not recorded (a node built by hand)
  std::vector<int32_t> values = n.weight.IntRepr();
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  if (values.size() > 16) return {};
  return values;
}

// Bits per index for a codebook of `size` values: 1 to 4.
int IndexBits(size_t size) {
  int bits = 1;
  while ((size_t{1} << bits) < size) ++bits;
  return bits;
}

int64_t PackedBytes(int64_t count, int bits) { return (count * bits + 7) / 8; }

}  // namespace

Shape LayerShape(const IntegerNode& n) {
  Shape s = n.weight.shape();
  if (n.kind == NodeKind::kLinear) std::swap(s[0], s[1]);
  return s;
}

Tensor DecodeBlockWeight(NodeKind kind, const BlockQuantized& blocks, const Tensor& factor, const Shape& layer_shape) {
  Tensor w = BlockDequantizeWeight(blocks, layer_shape);
  if (factor.defined()) {
    Shape per_row(w.dim(), 1);
    per_row[0] = w.size(0);
    w = Mul(w, factor.Reshape(per_row));
  }
  return kind == NodeKind::kLinear ? w.Transpose(0, 1).Contiguous() : w.Contiguous();
}

int64_t IntegerModel::Bytes() const {
  int64_t bytes = 0;
  for (const IntegerNode& n : nodes_) {
    if (!HasWeights(n.kind)) continue;
    int64_t numel = n.weight.numel();
    if (n.block) {  // Note [Block-format nodes]: as stored
      bytes += BlockWeightBytes(LayerShape(n), *n.block) + (n.weight_factor.defined() ? 4 * n.weight_factor.numel() : 0);
    } else if (n.weight.dtype() == DType::kF32) {
      bytes += 4 * numel;
    } else {
      size_t codebook = CodebookOf(n).size();
      bytes += codebook > 0                           ? PackedBytes(numel, IndexBits(codebook))
               : n.weight.dtype() == DType::kQInt4 ? (numel + 1) / 2
                                                   : numel;
      bytes += static_cast<int64_t>(codebook) + 4 * static_cast<int64_t>(n.weight.qparams().scales.size());
    }
    if (n.bias.defined()) bytes += 4 * n.bias.numel();
  }
  return bytes;
}

std::string IntegerModel::Summary() const {
  std::string out = absl::StrFormat("%-4s %-16s %-26s %-6s %-8s %s\n", "#", "kind", "name", "bits", "output", "weight");
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const IntegerNode& n = nodes_[i];
    std::string bits = HasWeights(n.kind) ? absl::StrCat("W", n.weight_bits, "A", n.act_bits) : "";
    size_t codebook = HasWeights(n.kind) ? CodebookOf(n).size() : 0;
    std::string stored = codebook > 0 ? absl::StrCat(" codebook(", codebook, ", ", IndexBits(codebook), "-bit)") : "";
    if (n.block) stored = absl::StrCat(" ", BlockFormatName(*n.block), HasWeights(n.kind) ? " blocks" : "");
    absl::StrAppendFormat(&out, "%-4d %-16s %-26s %-6s %-8s %s%s%s%s\n", i, NodeKindName(n.kind), n.name, bits,
                          Name(n.out_dtype), n.weight.defined() ? n.weight.Describe() : "", stored,
                          n.relu ? " +relu" : "", n.residual >= 0 ? absl::StrCat(" +residual(", n.residual, ")") : "");
  }
  absl::StrAppendFormat(&out, "bytes: %d\n", Bytes());
  return out;
}

// ---- the file format --------------------------------------------------------

namespace {

std::string NodeLine(const IntegerNode& n) {
  std::string line = absl::StrCat(NodeKindName(n.kind), " name=", n.name, " in=", absl::StrJoin(n.inputs, ","),
                                  " out=", Name(n.out_dtype));
  if (n.out_dtype != DType::kF32) {
    absl::StrAppend(&line, " scale=", absl::StrFormat("%.17g", n.out_params.scales[0]), " zp=", n.out_params.zero_points[0],
                    " qrange=", Ints({n.out_params.quant_min, n.out_params.quant_max}));
  }
  if (HasWeights(n.kind)) {
    QuantParams pw = n.weight.is_quantized() ? n.weight.qparams() : QuantParams{};
    absl::StrAppend(&line, " wdtype=", Name(n.weight.dtype()), " wshape=", absl::StrJoin(n.weight.shape(), ","),
                    " wrange=", Ints({pw.quant_min, pw.quant_max}), " bias=", n.bias.defined() ? 1 : 0,
                    " relu=", n.relu ? 1 : 0, " residual=", n.residual, " bits=", Ints({n.weight_bits, n.act_bits}));
    size_t codebook = CodebookOf(n).size();
    if (codebook > 0) absl::StrAppend(&line, " wcodes=", codebook, " wpack=", IndexBits(codebook));
    if (n.block) {
      absl::StrAppend(&line, " bshape=", absl::StrJoin(n.weight_blocks.codes.shape(), ","),
                      " factor=", n.weight_factor.defined() ? 1 : 0);
    }
  }
  if (n.block) absl::StrAppend(&line, " block=", BlockFormatName(*n.block));
  if (n.kind == NodeKind::kConv2d) {
    const Conv2dOptions& c = n.conv;
    absl::StrAppend(&line, " stride=", Ints({c.stride[0], c.stride[1]}), " pad=", Ints({c.padding[0], c.padding[1]}),
                    " dilation=", Ints({c.dilation[0], c.dilation[1]}), " groups=", c.groups);
  }
  if (n.kind == NodeKind::kMaxPool2d) {
    const Pool2dOptions& p = n.pool;
    absl::StrAppend(&line, " kernel=", Ints({p.kernel[0], p.kernel[1]}), " stride=", Ints({p.stride[0], p.stride[1]}),
                    " pad=", Ints({p.padding[0], p.padding[1]}), " dilation=", Ints({p.dilation[0], p.dilation[1]}));
  }
  if (n.kind == NodeKind::kShortcutPad) {
    absl::StrAppend(&line, " stride=", n.stride, " pad=", Ints({n.pad_before, n.pad_after}));
  }
  return line;
}

// The fields of one graph line, read with checks that name the line.
class LineReader {
 public:
  LineReader(const std::string& line, std::string where) : where_(std::move(where)) {
    std::vector<std::string> tokens = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (!tokens.empty()) kind_ = tokens[0];
    for (size_t i = 1; i < tokens.size(); ++i) {
      std::pair<std::string, std::string> kv = absl::StrSplit(tokens[i], absl::MaxSplits('=', 1));
      fields_[kv.first] = kv.second;
    }
  }
  const std::string& kind() const { return kind_; }
  bool Has(const std::string& key) const { return fields_.count(key) > 0; }
  absl::StatusOr<std::string> Str(const std::string& key) const {
    auto it = fields_.find(key);
    if (it == fields_.end()) return absl::InvalidArgumentError(absl::StrCat(where_, ": missing field '", key, "'"));
    return it->second;
  }
  absl::StatusOr<std::vector<int64_t>> Ints(const std::string& key, size_t count) const {
    absl::StatusOr<std::string> s = Str(key);
    if (!s.ok()) return s.status();
    std::vector<int64_t> out;
    for (const std::string& part : std::vector<std::string>(absl::StrSplit(*s, ',', absl::SkipEmpty()))) {
      int64_t v;
      if (!absl::SimpleAtoi(part, &v)) return Bad(key, *s);
      out.push_back(v);
    }
    if (count != 0 && out.size() != count) return Bad(key, *s);
    return out;
  }
  absl::StatusOr<double> Double(const std::string& key) const {
    absl::StatusOr<std::string> s = Str(key);
    double v;
    if (!s.ok()) return s.status();
    if (!absl::SimpleAtod(*s, &v)) return Bad(key, *s);
    return v;
  }
  absl::Status Bad(const std::string& key, const std::string& value) const {
    return absl::InvalidArgumentError(absl::StrCat(where_, ": bad value '", value, "' for '", key, "'"));
  }

 private:
  std::string where_, kind_;
  std::map<std::string, std::string> fields_;
};

#define QUANTA_ASSIGN_OR_RETURN_IMPL(var, expr, tmp) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  var = std::move(*tmp)
#define QUANTA_CONCAT_INNER(a, b) a##b
#define QUANTA_CONCAT(a, b) QUANTA_CONCAT_INNER(a, b)
#define ASSIGN_OR_RETURN(var, expr) QUANTA_ASSIGN_OR_RETURN_IMPL(var, expr, QUANTA_CONCAT(status_or_, __LINE__))

absl::StatusOr<DType> ParseDType(const LineReader& r, const std::string& key) {
  ASSIGN_OR_RETURN(std::string s, r.Str(key));
  for (DType d : {DType::kF32, DType::kQInt8, DType::kQUInt8, DType::kQInt4}) {
    if (s == Name(d)) return d;
  }
  return r.Bad(key, s);
}

// One node from its line and the file's tensors.
absl::StatusOr<IntegerNode> ParseNode(const LineReader& r, const TensorMap& tensors, const std::string& where) {
  IntegerNode n;
  bool found = false;
  for (NodeKind k : kKinds) {
    if (r.kind() == NodeKindName(k)) {
      n.kind = k;
      found = true;
    }
  }
  if (!found || n.kind == NodeKind::kInput) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": unknown node kind '", r.kind(), "'"));
  }
  ASSIGN_OR_RETURN(n.name, r.Str("name"));
  ASSIGN_OR_RETURN(std::vector<int64_t> in, r.Ints("in", 1));
  n.inputs = {static_cast<int>(in[0])};
  ASSIGN_OR_RETURN(n.out_dtype, ParseDType(r, "out"));
  if (n.out_dtype != DType::kF32) {
    ASSIGN_OR_RETURN(double scale, r.Double("scale"));
    ASSIGN_OR_RETURN(std::vector<int64_t> zp, r.Ints("zp", 1));
    ASSIGN_OR_RETURN(std::vector<int64_t> range, r.Ints("qrange", 2));
    if (!(scale > 0)) return r.Bad("scale", absl::StrCat(scale));
    n.out_params = QuantParams::PerTensor(scale, zp[0]).WithRange(range[0], range[1]);
  }
  if (HasWeights(n.kind)) {
    ASSIGN_OR_RETURN(DType wdtype, ParseDType(r, "wdtype"));
    ASSIGN_OR_RETURN(std::vector<int64_t> wshape, r.Ints("wshape", n.kind == NodeKind::kConv2d ? 4 : 2));
    ASSIGN_OR_RETURN(std::vector<int64_t> wrange, r.Ints("wrange", 2));
    ASSIGN_OR_RETURN(std::vector<int64_t> flags, r.Ints("bias", 1));
    ASSIGN_OR_RETURN(std::vector<int64_t> relu, r.Ints("relu", 1));
    ASSIGN_OR_RETURN(std::vector<int64_t> residual, r.Ints("residual", 1));
    ASSIGN_OR_RETURN(std::vector<int64_t> bits, r.Ints("bits", 2));
    n.relu = relu[0] != 0;
    n.residual = static_cast<int>(residual[0]);
    n.weight_bits = static_cast<int>(bits[0]);
    n.act_bits = static_cast<int>(bits[1]);
    for (int64_t d : wshape) {
      if (d <= 0 || d > (int64_t{1} << 20)) return r.Bad("wshape", absl::StrJoin(wshape, ","));
    }
    if (NumElements(wshape) > (int64_t{1} << 34)) return r.Bad("wshape", absl::StrJoin(wshape, ","));
    int axis = n.kind == NodeKind::kConv2d ? 0 : 1;
    int64_t channels = wshape[axis], numel = NumElements(wshape);
    auto get = [&](const std::string& suffix, DType dtype, int64_t count) -> absl::StatusOr<Tensor> {
      std::string key = n.name + suffix;
      auto it = tensors.find(key);
      if (it == tensors.end()) return absl::NotFoundError(absl::StrCat(where, ": tensor '", key, "' is missing"));
      if (it->second.dtype() != dtype || it->second.numel() != count) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": tensor '", key, "' is ", it->second.Describe(),
                                                       ", expected ", Name(dtype), " with ", count, " values"));
      }
      return it->second;
    };
    if (r.Has("block")) {  // Note [Block-format nodes]
      ASSIGN_OR_RETURN(std::string name, r.Str("block"));
      std::optional<BlockFormat> f = BlockFormatFromName(name);
      if (!f || wdtype != DType::kF32) return r.Bad("block", name);
      ASSIGN_OR_RETURN(std::vector<int64_t> bshape, r.Ints("bshape", 2));
      ASSIGN_OR_RETURN(std::vector<int64_t> has_factor, r.Ints("factor", 1));
      Shape layer_shape = wshape;
      if (n.kind == NodeKind::kLinear) std::swap(layer_shape[0], layer_shape[1]);
      const int64_t out = layer_shape[0], rest = numel / out;
      const int64_t rows = (out + f->rows - 1) / f->rows * f->rows, cols = (rest + f->cols - 1) / f->cols * f->cols;
      if (bshape[0] != rows || bshape[1] != cols) return r.Bad("bshape", absl::StrJoin(bshape, ","));
      ASSIGN_OR_RETURN(Tensor raw, get(".weight_codes", DType::kU8, StorageBytes(f->element, rows * cols)));
      BlockQuantized q{.codes = Tensor::Empty({rows, cols}, f->element), .format = *f};
      std::memcpy(q.codes.raw_data(), raw.Contiguous().raw_data(), StorageBytes(f->element, rows * cols));
      ASSIGN_OR_RETURN(q.scales, get(".weight_scales", f->scale, rows / f->rows * (cols / f->cols)));
      q.scales = q.scales.Reshape({rows / f->rows, cols / f->cols}).Contiguous();
      ASSIGN_OR_RETURN(q.tensor_scale, get(".weight_tensor_scale", DType::kF32, 1));
      q.tensor_scale = q.tensor_scale.Reshape({}).Contiguous();
      if (has_factor[0]) {
        ASSIGN_OR_RETURN(n.weight_factor, get(".weight_factor", DType::kF32, out));
        n.weight_factor = n.weight_factor.Reshape({out}).Contiguous();
      }
      n.block = f;
      n.weight = DecodeBlockWeight(n.kind, q, n.weight_factor, layer_shape);
      n.weight_blocks = std::move(q);
    } else if (wdtype == DType::kF32) {  // a float layer
      ASSIGN_OR_RETURN(Tensor values, get(".weight", DType::kF32, numel));
      n.weight = values.Reshape(wshape).Contiguous();
    } else {
      ASSIGN_OR_RETURN(Tensor scales_t, get(".weight_scale", DType::kF32, channels));
      std::vector<double> scales;
      for (float s : scales_t.ToVector<float>()) {
        if (!(s > 0) || !std::isfinite(s)) return r.Bad("weight_scale", absl::StrCat(s));
        scales.push_back(s);
      }
      QuantParams pw =
          QuantParams::PerChannel(scales, std::vector<int64_t>(channels, 0), axis).WithRange(wrange[0], wrange[1]);
      if (r.Has("wcodes")) {  // Note [Codebook weights]
        ASSIGN_OR_RETURN(std::vector<int64_t> count, r.Ints("wcodes", 1));
        if (count[0] < 1 || count[0] > 16) return r.Bad("wcodes", absl::StrCat(count[0]));
        int bits = 4;  // files written before "wpack"
        if (r.Has("wpack")) {
          ASSIGN_OR_RETURN(std::vector<int64_t> pack, r.Ints("wpack", 1));
          if (pack[0] < 1 || pack[0] > 4 || (int64_t{1} << pack[0]) < count[0]) return r.Bad("wpack", absl::StrCat(pack[0]));
          bits = static_cast<int>(pack[0]);
        }
        ASSIGN_OR_RETURN(Tensor book_t, get(".weight_codebook", DType::kI8, count[0]));
        ASSIGN_OR_RETURN(Tensor packed, get(".weight", DType::kU8, PackedBytes(numel, bits)));
        std::vector<int32_t> book = book_t.ToVector<int32_t>();
        for (size_t i = 1; i < book.size(); ++i) {
          if (book[i] <= book[i - 1]) {
            return absl::InvalidArgumentError(absl::StrCat(where, ": the codebook of '", n.name, "' is not ascending"));
          }
        }
        const DTypeInfo& info = Info(wdtype);
        if (book.front() < info.qmin || book.back() > info.qmax) return r.Bad("weight_codebook", absl::StrJoin(book, ","));
        std::vector<uint8_t> bytes = packed.ToVector<uint8_t>();
        std::vector<int32_t> values(numel);
        const uint32_t mask = (1u << bits) - 1;
        for (int64_t i = 0; i < numel; ++i) {
          int64_t bit = i * bits;  // bits <= 4: an index lies within two bytes
          uint32_t window = bytes[bit / 8] | (bit / 8 + 1 < static_cast<int64_t>(bytes.size()) ? bytes[bit / 8 + 1] << 8 : 0);
          uint32_t index = (window >> (bit % 8)) & mask;
          if (index >= book.size()) {
            return absl::InvalidArgumentError(absl::StrCat(where, ": weight index ", index, " of '", n.name,
                                                           "' outside its codebook of ", book.size()));
          }
          values[i] = book[index];
        }
        n.weight = Tensor::FromQuantized(values, wshape, wdtype, pw);
      } else if (wdtype == DType::kQInt4) {
        ASSIGN_OR_RETURN(Tensor packed, get(".weight", DType::kU8, (numel + 1) / 2));
        n.weight = Tensor::Empty(wshape, DType::kQInt4, Device::Cpu(), pw);
        std::memcpy(n.weight.raw_data(), packed.Contiguous().raw_data(), (numel + 1) / 2);
      } else if (wdtype == DType::kQInt8) {
        ASSIGN_OR_RETURN(Tensor values, get(".weight", DType::kI8, numel));
        n.weight = Tensor::Empty(wshape, DType::kQInt8, Device::Cpu(), pw);
        std::memcpy(n.weight.raw_data(), values.Contiguous().raw_data(), numel);
      } else {
        return r.Bad("wdtype", Name(wdtype));
      }
      // Values outside the stated range would not come from Quantize: reject them.
      for (int32_t q : n.weight.IntRepr()) {
        if (q < wrange[0] || q > wrange[1]) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": weight value ", q, " outside its range [",
                                                         wrange[0], ", ", wrange[1], "]"));
        }
      }
    }
    if (flags[0]) {
      ASSIGN_OR_RETURN(n.bias, get(".bias", DType::kF32, channels));
      n.bias = n.bias.Reshape({channels}).Contiguous();
    }
  }
  if (n.kind == NodeKind::kQuantize && r.Has("block")) {
    ASSIGN_OR_RETURN(std::string name, r.Str("block"));
    n.block = BlockFormatFromName(name);
    if (!n.block) return r.Bad("block", name);
  }
  if (n.kind == NodeKind::kConv2d) {
    ASSIGN_OR_RETURN(std::vector<int64_t> stride, r.Ints("stride", 2));
    ASSIGN_OR_RETURN(std::vector<int64_t> pad, r.Ints("pad", 2));
    ASSIGN_OR_RETURN(std::vector<int64_t> dilation, r.Ints("dilation", 2));
    ASSIGN_OR_RETURN(std::vector<int64_t> groups, r.Ints("groups", 1));
    n.conv = Conv2dOptions{.stride = {stride[0], stride[1]}, .padding = {pad[0], pad[1]},
                           .dilation = {dilation[0], dilation[1]}, .groups = groups[0]};
  }
  if (n.kind == NodeKind::kMaxPool2d) {
    ASSIGN_OR_RETURN(std::vector<int64_t> kernel, r.Ints("kernel", 2));
    ASSIGN_OR_RETURN(std::vector<int64_t> stride, r.Ints("stride", 2));
    ASSIGN_OR_RETURN(std::vector<int64_t> pad, r.Ints("pad", 2));
    ASSIGN_OR_RETURN(std::vector<int64_t> dilation, r.Ints("dilation", 2));
    n.pool = Pool2dOptions{.kernel = {kernel[0], kernel[1]}, .stride = {stride[0], stride[1]},
                           .padding = {pad[0], pad[1]}, .dilation = {dilation[0], dilation[1]}};
  }
  if (n.kind == NodeKind::kShortcutPad) {
    ASSIGN_OR_RETURN(std::vector<int64_t> stride, r.Ints("stride", 1));
    ASSIGN_OR_RETURN(std::vector<int64_t> pad, r.Ints("pad", 2));
    if (stride[0] < 1 || pad[0] < 0 || pad[1] < 0) return r.Bad("stride/pad", "");
    n.stride = stride[0];
    n.pad_before = pad[0];
    n.pad_after = pad[1];
  }
  return n;
}

}  // namespace

absl::Status IntegerModel::Save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  TensorMap tensors;
  std::vector<std::string> lines;
  for (size_t i = 1; i < nodes_.size(); ++i) {
    const IntegerNode& n = nodes_[i];
    lines.push_back(NodeLine(n));
    if (!HasWeights(n.kind)) continue;
    const Tensor& w = n.weight;
    if (n.block) {  // Note [Block-format nodes]: the blocks, not the decoded weight
      const Tensor codes = n.weight_blocks.codes.Contiguous();
      const int64_t bytes = StorageBytes(codes.dtype(), codes.numel());
      Tensor raw = Tensor::Empty({bytes}, DType::kU8);
      std::memcpy(raw.raw_data(), codes.raw_data(), bytes);
      tensors[n.name + ".weight_codes"] = raw;
      tensors[n.name + ".weight_scales"] = n.weight_blocks.scales.Contiguous();
      tensors[n.name + ".weight_tensor_scale"] = n.weight_blocks.tensor_scale.Reshape({1}).Contiguous();
      if (n.weight_factor.defined()) tensors[n.name + ".weight_factor"] = n.weight_factor;
      if (n.bias.defined()) tensors[n.name + ".bias"] = n.bias;
      continue;
    }
    if (w.dtype() == DType::kF32) {
      tensors[n.name + ".weight"] = w;
      if (n.bias.defined()) tensors[n.name + ".bias"] = n.bias;
      continue;
    }
    std::vector<int32_t> book = CodebookOf(n);
    if (!book.empty()) {  // Note [Codebook weights]: b-bit indices, low bits first
      const int bits = IndexBits(book.size());
      std::vector<int32_t> values = w.IntRepr();
      std::vector<uint8_t> packed(PackedBytes(static_cast<int64_t>(values.size()), bits) + 1, 0);  // + 1: spill
      for (size_t i = 0; i < values.size(); ++i) {
        uint32_t index = static_cast<uint32_t>(std::lower_bound(book.begin(), book.end(), values[i]) - book.begin());
        size_t bit = i * bits;
        packed[bit / 8] |= static_cast<uint8_t>(index << (bit % 8));
        packed[bit / 8 + 1] |= static_cast<uint8_t>(index >> (8 - bit % 8));
      }
      packed.pop_back();  // the spill byte is always 0: the last index ends inside the stream
      tensors[n.name + ".weight"] = Tensor::FromVector(packed, {static_cast<int64_t>(packed.size())});
      std::vector<int8_t> book8(book.begin(), book.end());
      tensors[n.name + ".weight_codebook"] = Tensor::FromVector(book8, {static_cast<int64_t>(book8.size())});
    } else {
      int64_t bytes = w.dtype() == DType::kQInt4 ? (w.numel() + 1) / 2 : w.numel();
      Tensor raw = Tensor::Empty({bytes}, w.dtype() == DType::kQInt4 ? DType::kU8 : DType::kI8);
      std::memcpy(raw.raw_data(), w.Contiguous().raw_data(), bytes);
      tensors[n.name + ".weight"] = raw;
    }
    std::vector<float> scales(w.qparams().scales.begin(), w.qparams().scales.end());
    tensors[n.name + ".weight_scale"] = Tensor::FromVector(scales, {static_cast<int64_t>(scales.size())});
    if (n.bias.defined()) tensors[n.name + ".bias"] = n.bias;
  }
  std::map<std::string, std::string> meta = metadata_;
  for (const auto& [k, v] : metadata) meta[k] = v;
  meta["quanta.format"] = "integer_model/1";
  meta["quanta.graph"] = absl::StrJoin(lines, "\n");
  return SaveSafetensors(path, tensors, meta);
}

absl::StatusOr<std::shared_ptr<IntegerModel>> IntegerModel::FromSafetensors(absl::StatusOr<Safetensors> file,
                                                                            const std::string& src) {
  if (!file.ok()) return file.status();
  auto format = file->metadata.find("quanta.format");
  auto graph = file->metadata.find("quanta.graph");
  if (format == file->metadata.end() || format->second != "integer_model/1" || graph == file->metadata.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(src, ": not a Quanta integer model (no 'quanta.format: integer_model/1' and 'quanta.graph' metadata)"));
  }
  auto model = std::make_shared<IntegerModel>();
  int line_no = 0;
  for (const std::string& line : std::vector<std::string>(absl::StrSplit(graph->second, '\n', absl::SkipEmpty()))) {
    ++line_no;
    std::string where = absl::StrCat(src, ": graph line ", line_no);
    LineReader reader(line, where);
    absl::StatusOr<IntegerNode> node = ParseNode(reader, file->tensors, where);
    if (!node.ok()) return node.status();
    try {
      model->Add(std::move(*node));
    } catch (const Error& e) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", e.what()));
    }
  }
  if (model->nodes().size() < 2) return absl::InvalidArgumentError(absl::StrCat(src, ": the graph has no nodes"));
  for (const auto& [k, v] : file->metadata) {
    if (k != "quanta.graph") model->metadata_[k] = v;
  }
  return model;
}

absl::StatusOr<std::shared_ptr<IntegerModel>> IntegerModel::Parse(std::string_view bytes, std::string_view source) {
  return FromSafetensors(ParseSafetensors(bytes, source), std::string(source));
}

absl::StatusOr<std::shared_ptr<IntegerModel>> IntegerModel::Load(const std::string& path) {
  return FromSafetensors(LoadSafetensors(path), path);
}

}  // namespace quanta::quant

// IntegerModel -> ONNX QDQ: one emitter per node kind, values named after the
// nodes that make them, float views (DequantizeLinear) made once per value.
#include "quant/onnx_export.h"

#include <cstring>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/minifloat.h"
#include "nn/safetensors.h"
#include "onnx/checker.h"
#include "onnx/common/constants.h"
#include "onnx/defs/schema.h"
#include "onnx/onnx_pb.h"
#include "onnx/shape_inference/implementation.h"
#include "quant/quantizer.h"

namespace quanta::quant {
namespace {

constexpr int kOpset = 13;  // per-axis QuantizeLinear/DequantizeLinear
// Blocked DequantizeLinear (block_size) and the float8 types: a model with
// block-format nodes goes out at this opset (Note [Block formats in ONNX]).
constexpr int kBlockOpset = 21;
constexpr int kBlockIrVersion = 10;  // what opset 21 needs (Debian's ONNX 1.12 writes 8)
// onnx.proto's float8 element types, which Debian's ONNX 1.12 does not name.
constexpr int kOnnxFloat8E4M3FN = 17;
constexpr int kOnnxFloat8E5M2 = 19;

class Emitter {
 public:
  Emitter(const IntegerModel& model, onnx::GraphProto* graph) : model_(model), graph_(graph) {}

  void Run(const Shape& input_shape) {
    onnx::ValueInfoProto* in = graph_->add_input();
    in->set_name("input");
    SetType(in, onnx::TensorProto::FLOAT, input_shape, true);
    names_.push_back("input");
    for (size_t i = 1; i < model_.nodes().size(); ++i) names_.push_back(Emit(static_cast<int>(i)));
    const IntegerNode& last = model_.nodes().back();
    QUANTA_CHECK(last.out_dtype == DType::kF32, "export_onnx: the model's output must be f32");
    onnx::ValueInfoProto* out = graph_->add_output();
    out->set_name(names_.back());
    // (batch, classes) when a Linear makes the output, (batch, channels, height,
    // width) when a Conv does, else (batch, features).
    int i = static_cast<int>(model_.nodes().size()) - 1;
    while (model_.node(i).kind == NodeKind::kDequantize) i = model_.node(i).inputs[0];
    auto* t = out->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_param("batch");
    auto* features = t->mutable_shape()->add_dim();
    if (model_.node(i).kind == NodeKind::kLinear) {
      features->set_dim_value(model_.node(i).weight.size(1));
    } else if (model_.node(i).kind == NodeKind::kConv2d) {
      features->set_dim_value(model_.node(i).weight.size(0));
      t->mutable_shape()->add_dim()->set_dim_param("height");
      t->mutable_shape()->add_dim()->set_dim_param("width");
    } else {
      features->set_dim_param("features");
    }
  }

 private:
  static void SetType(onnx::ValueInfoProto* v, int elem, const Shape& shape, bool symbolic_batch) {
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    for (size_t d = 0; d < shape.size(); ++d) {
      auto* dim = t->mutable_shape()->add_dim();
      if (d == 0 && symbolic_batch) {
        dim->set_dim_param("batch");
      } else {
        dim->set_dim_value(shape[d]);
      }
    }
  }

  onnx::NodeProto* Node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output,
                        const std::string& name) {
    onnx::NodeProto* n = graph_->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const std::string& i : inputs) n->add_input(i);
    n->add_output(output);
    return n;
  }
  static void Ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void Int(onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }

  std::string Initializer(const std::string& name, int elem, const Shape& shape, const void* data, size_t bytes) {
    onnx::TensorProto* t = graph_->add_initializer();
    t->set_name(name);
    t->set_data_type(elem);
    for (int64_t d : shape) t->add_dims(d);
    t->set_raw_data(std::string(static_cast<const char*>(data), bytes));
    return name;
  }
  std::string Floats(const std::string& name, const std::vector<float>& v, const Shape& shape) {
    return Initializer(name, onnx::TensorProto::FLOAT, shape, v.data(), v.size() * sizeof(float));
  }
  std::string Int64s(const std::string& name, const std::vector<int64_t>& v) {
    return Initializer(name, onnx::TensorProto::INT64, {static_cast<int64_t>(v.size())}, v.data(), v.size() * 8);
  }
  // Scale and zero point initializers of per-tensor params for a qint8/quint8 value.
  std::pair<std::string, std::string> QParams(const std::string& prefix, DType dtype, const QuantParams& p) {
    std::string s = Floats(prefix + "_scale", {static_cast<float>(p.scales[0])}, {});
    std::string z;
    if (dtype == DType::kQUInt8) {
      uint8_t v = static_cast<uint8_t>(p.zero_points[0]);
      z = Initializer(prefix + "_zero_point", onnx::TensorProto::UINT8, {}, &v, 1);
    } else {
      int8_t v = static_cast<int8_t>(p.zero_points[0]);
      z = Initializer(prefix + "_zero_point", onnx::TensorProto::INT8, {}, &v, 1);
    }
    return {s, z};
  }

  // Value i as f32: itself, or its DequantizeLinear (made once).
  std::string Float(int i) {
    const IntegerNode& n = model_.node(i);
    if (n.out_dtype == DType::kF32) return names_[i];
    auto it = float_views_.find(i);
    if (it != float_views_.end()) return it->second;
    auto [s, z] = qparams_names_.at(i);
    std::string out = names_[i] + "_dq";
    Node("DequantizeLinear", {names_[i], s, z}, out, out);
    float_views_[i] = out;
    return out;
  }

  // f32 value `x` quantized as node i's output (a Clip first for a range
  // narrower than the dtype's: 4-bit activations in an 8-bit container).
  std::string QuantizeOutput(int i, const std::string& x) {
    const IntegerNode& n = model_.node(i);
    std::string base = absl::StrCat("v", i, "_", n.name);
    auto qp = QParams(base, n.out_dtype, n.out_params);
    qparams_names_[i] = qp;
    std::string in = x;
    if (n.out_params.quant_min != 0 || n.out_params.quant_max != 0) {
      double s = n.out_params.scales[0];
      int64_t z = n.out_params.zero_points[0];
      std::string lo = Floats(base + "_clip_min", {static_cast<float>(s * (n.out_params.quant_min - z))}, {});
      std::string hi = Floats(base + "_clip_max", {static_cast<float>(s * (n.out_params.quant_max - z))}, {});
      in = base + "_clipped";
      Node("Clip", {x, lo, hi}, in, in);
    }
    Node("QuantizeLinear", {in, qp.first, qp.second}, base, base);
    return base;
  }

  // DequantizeLinear of an integer weight (qint4 goes out as int8 values: ONNX
  // opset 13 has no 4-bit type; the values keep their 4-bit range).
  std::string Weight(const IntegerNode& n, const std::string& base) {
    const Tensor& w = n.weight;
    if (w.dtype() == DType::kF32) {  // a float layer: the weight as it is
      return Floats(base + "_weight", w.ToVector<float>(), w.shape());
    }
    std::vector<int32_t> v = w.IntRepr();
    std::vector<int8_t> q(v.begin(), v.end());
    std::string wq = Initializer(base + "_weight_q", onnx::TensorProto::INT8, w.shape(), q.data(), q.size());
    const QuantParams& p = w.qparams();
    std::vector<float> scales(p.scales.begin(), p.scales.end());
    int64_t channels = static_cast<int64_t>(scales.size());
    std::string s = Floats(base + "_weight_scale", scales, {channels});
    std::vector<int8_t> zeros(channels, 0);
    std::string z = Initializer(base + "_weight_zero_point", onnx::TensorProto::INT8, {channels}, zeros.data(), channels);
    std::string out = base + "_weight";
    onnx::NodeProto* dq = Node("DequantizeLinear", {wq, s, z}, out, out);
    Int(dq, "axis", p.axis);
    return out;
  }

  // Note [Block formats in ONNX]
  // A model with block-format nodes goes out at opset 21, the first with blocked
  // DequantizeLinear (block_size) and float8 inputs:
  //  - Weights: DequantizeLinear of the stored codes with one f32 scale per
  //    block (the E8M0 power of two, or NVFP4's E4M3 scale times its tensor
  //    scale), then Slice / Reshape / Mul by the folded batch norm's factor, the
  //    order DecodeBlockWeight multiplies in, so the f32 weight is the same to
  //    the bit. E5M2 elements go as FLOAT8E5M2; E4M3, FP6 and FP4 as
  //    FLOAT8E4M3FN, which holds every FP6 and FP4 value exactly: a byte an
  //    element, where Quanta's file packs FP4 two to a byte. ONNX has no FP6
  //    type, and opset 23's FLOAT4E2M1 has no CPU kernel in ONNX Runtime (1.30)
  //    to check an export against.
  //  - Activations: QuantizeLinear takes its scales as inputs, while a block
  //    format computes each block's scale from the block at run time, so the
  //    quantization is spelled out in ordinary ops: Pad the channels to whole
  //    blocks, Reshape to (N, blocks, B, rest), ReduceMax of Abs; the E8M0 scale
  //    from floor(log2 amax), which Log gives to within one and two comparisons
  //    with exact powers of two (a Gather from a table) correct; NVFP4's per-sample
  //    tensor scale and E4M3 block scale through Cast (saturating); elements
  //    rounded by Cast for FP8 and by Round(v * u) / u with the binade's unit u
  //    for FP6 and FP4 (ONNX's Round is half to even, like EncodeMiniFloat).
  //    tests/quant:onnx_runtime_test holds ONNX Runtime's result to Quanta's
  //    element for element. NaN and infinite inputs are not matched.
  // Debian's ONNX (1.12) knows opsets up to 17, so its checker does not read
  // these files; ONNX Runtime checks them as it loads them.
  // A one-output node named `out` (its name too); returns out.
  std::string Op(const std::string& op, const std::vector<std::string>& inputs, const std::string& out) {
    Node(op, inputs, out, out);
    return out;
  }
  std::string Scalar(const std::string& name, float v) { return Floats(name, {v}, {}); }
  // Cast to element type `to` (saturating for float8 targets); returns out.
  std::string Cast(const std::string& in, int to, const std::string& out) {
    onnx::NodeProto* c = Node("Cast", {in}, out, out);
    Int(c, "to", to);
    if (to == kOnnxFloat8E4M3FN || to == kOnnxFloat8E5M2) Int(c, "saturate", 1);
    return out;
  }

  // A block-format layer's f32 weight in the layout the Conv (O, C/G, KH, KW) or
  // Gemm (K, N) reads: DequantizeLinear of the stored blocks, then what
  // DecodeBlockWeight does (drop the padding, reshape, times the factor).
  std::string BlockWeight(const IntegerNode& n, const std::string& base) {
    const BlockFormat& f = *n.block;
    const BlockQuantized& q = n.weight_blocks;
    if (f.rows != 1 || q.codes.dim() != 2) {
      throw Error(absl::StrCat("export_onnx: node '", n.name, "' has ", f.ToString(),
                               " weight blocks; ONNX's blocked DequantizeLinear takes 1 x B blocks"));
    }
    const Tensor codes = q.codes.To(Device::Cpu()).Contiguous();
    const int64_t rows = codes.size(0), cols = codes.size(1), blocks = cols / f.cols;
    // Elements: E5M2 as FLOAT8E5M2; E4M3, FP6 and FP4 as FLOAT8E4M3FN, which
    // holds every FP6 and FP4 value exactly (ONNX has no FP6 type, and ONNX
    // Runtime no CPU kernel for opset 23's FLOAT4E2M1): one byte an element.
    const MiniFloatFormat& element = MiniFloatOf(f.element);
    const bool e5m2 = f.element == DType::kF8E5M2;
    const MiniFloatFormat& container = MiniFloatOf(e5m2 ? DType::kF8E5M2 : DType::kF8E4M3);
    const int bits = Info(f.element).bits;
    const auto* packed = static_cast<const uint8_t*>(codes.raw_data());
    std::vector<uint8_t> bytes(static_cast<size_t>(rows * cols));
    for (int64_t i = 0; i < rows * cols; ++i) {
      const uint32_t c = LoadMiniFloatCode(bits, packed, i);
      const uint32_t widened = EncodeMiniFloat(container, DecodeMiniFloat(element, c));
      bytes[i] = static_cast<uint8_t>(element.dtype == container.dtype ? c : widened);
    }
    std::string wq = Initializer(base + "_weight_codes", e5m2 ? kOnnxFloat8E5M2 : kOnnxFloat8E4M3FN, {rows, cols},
                                 bytes.data(), bytes.size());
    // Scales as the f32 each block's elements are multiplied by (E8M0, or
    // NVFP4's E4M3 times its tensor scale: DecodeBlockScale).
    const Tensor scales = q.scales.To(Device::Cpu()).Contiguous();
    const float g = q.tensor_scale.To(Device::Cpu()).item<float>();
    const MiniFloatFormat* scale_format = f.scale == DType::kF32 ? nullptr : &MiniFloatOf(f.scale);
    std::vector<float> s(static_cast<size_t>(rows * blocks));
    for (int64_t b = 0; b < rows * blocks; ++b) {
      const uint32_t stored = scale_format == nullptr ? FloatBits(static_cast<const float*>(scales.raw_data())[b])
                                                      : static_cast<const uint8_t*>(scales.raw_data())[b];
      s[b] = DecodeBlockScale(scale_format, stored, g);
    }
    std::string ws = Floats(base + "_weight_block_scale", s, {rows, blocks});
    onnx::NodeProto* dq = Node("DequantizeLinear", {wq, ws}, base + "_weight_blocks", base + "_weight_blocks");
    Int(dq, "axis", 1);
    Int(dq, "block_size", f.cols);
    std::string w = base + "_weight_blocks";
    // The layer's own shape: (O, C/G, KH, KW), or (N, K) for a Linear, whose
    // node keeps (K, N).
    const bool linear = n.kind == NodeKind::kLinear;
    const Shape layer = LayerShape(n);
    int64_t rest = 1;
    for (size_t d = 1; d < layer.size(); ++d) rest *= layer[d];
    if (rows != layer[0] || cols < rest) {
      throw Error(absl::StrCat("export_onnx: node '", n.name, "' has weight codes ", codes.Describe(),
                               " that do not hold its weight ", ShapeToString(layer)));
    }
    if (cols != rest) {
      w = Op("Slice", {w, Int64s(base + "_weight_starts", {0}), Int64s(base + "_weight_ends", {rest}),
                       Int64s(base + "_weight_axes", {1})},
             base + "_weight_unpadded");
    }
    w = Op("Reshape", {w, Int64s(base + "_weight_shape", std::vector<int64_t>(layer.begin(), layer.end()))},
           base + "_weight_layer");
    if (n.weight_factor.defined()) {
      Shape per_row(layer.size(), 1);
      per_row[0] = layer[0];
      w = Op("Mul", {w, Floats(base + "_weight_factor", n.weight_factor.To(Device::Cpu()).ToVector<float>(), per_row)},
             base + "_weight_factored");
    }
    if (linear) {
      onnx::NodeProto* t = Node("Transpose", {w}, base + "_weight", base + "_weight");
      Ints(t, "perm", {1, 0});
      return base + "_weight";
    }
    return w;
  }

  // Channels (dim 1) and rank of block-quantized value i, from a layer that reads
  // it: as its input (a Conv's C, a Gemm's K) or as its residual (the output's).
  std::pair<int64_t, int> BlockValueShape(int i) {
    for (size_t j = i + 1; j < model_.nodes().size(); ++j) {
      const IntegerNode& m = model_.node(static_cast<int>(j));
      if (m.kind != NodeKind::kConv2d && m.kind != NodeKind::kLinear) continue;
      const bool conv = m.kind == NodeKind::kConv2d;
      if (m.inputs[0] == i) return {conv ? m.weight.size(1) * m.conv.groups : m.weight.size(0), conv ? 4 : 2};
      if (m.residual == i) return {conv ? m.weight.size(0) : m.weight.size(1), conv ? 4 : 2};
    }
    throw Error(absl::StrCat("export_onnx: block-quantized value '", model_.node(i).name,
                             "' has no Conv or Linear reader to give its channels"));
  }

  // Node i's block quantization of f32 `x` as ordinary ops, computed at run time
  // as BlockFakeQuantizeActivation does: blocks of B channels (dim 1, zero
  // padded), each scaled by its own maximum, elements rounded to the format
  // (half to even, saturating), times the scale.
  std::string BlockActivation(int i, const std::string& x) {
    const IntegerNode& n = model_.node(i);
    const BlockFormat& f = *n.block;
    const std::string base = absl::StrCat("v", i, "_", n.name);
    if (f.rows != 1 || (f.scale != DType::kF8E8M0 && f.scale != DType::kF8E4M3)) {
      throw Error(absl::StrCat("export_onnx: node '", n.name, "' is in ", f.ToString(),
                               "; activations export in MX (E8M0 scales) and NVFP4 blocks"));
    }
    const auto [channels, rank] = BlockValueShape(i);
    const int64_t size = f.cols, nb = (channels + size - 1) / size, padded = nb * size;
    std::string xp = x;
    if (padded != channels) {
      std::vector<int64_t> pads(2 * rank, 0);
      pads[rank + 1] = padded - channels;
      xp = Op("Pad", {x, Int64s(base + "_block_pads", pads)}, base + "_padded");
    }
    const std::string shape = Op("Shape", {xp}, base + "_padded_shape");
    // (N, blocks, B, rest): a block is B consecutive channels at one position.
    const std::string blocks = Op("Reshape", {xp, Int64s(base + "_blocks_shape", {0, nb, size, -1})}, base + "_blocks");
    const std::string abs = Op("Abs", {blocks}, base + "_abs");
    onnx::NodeProto* rm = Node("ReduceMax", {abs, Int64s(base + "_block_axis", {2})}, base + "_amax", base + "_amax");
    Int(rm, "keepdims", 1);
    const std::string amax = base + "_amax";
    const MiniFloatFormat& element = MiniFloatOf(f.element);
    std::string scale;
    if (f.scale == DType::kF8E8M0) {
      scale = E8m0Scale(base, amax, element);
    } else {  // NVFP4: a tensor scale g per sample, E4M3 block scales
      onnx::NodeProto* tm = Node("ReduceMax", {amax, Int64s(base + "_sample_axes", {1, 2, 3})}, base + "_tensor_amax",
                                 base + "_tensor_amax");
      Int(tm, "keepdims", 1);
      const std::string ta = base + "_tensor_amax";
      const std::string usable =
          Op("And", {Op("Greater", {ta, Scalar(base + "_zero", 0.f)}, base + "_tensor_positive"),
                     Op("Not", {Op("IsInf", {ta}, base + "_tensor_inf")}, base + "_tensor_finite")},
             base + "_tensor_usable");
      const float top = MiniFloatOf(DType::kF8E4M3).max * element.max;
      const std::string g = Op("Where", {usable, Op("Div", {ta, Scalar(base + "_top", top)}, base + "_g_raw"),
                                         Scalar(base + "_one", 1.f)},
                               base + "_g");
      const std::string wanted =
          Op("Div", {Op("Div", {amax, Scalar(base + "_element_max", element.max)}, base + "_per_element"), g},
             base + "_wanted_scale");
      const std::string code = Cast(Cast(wanted, kOnnxFloat8E4M3FN, base + "_scale_e4m3"), onnx::TensorProto::FLOAT,
                                    base + "_scale_code");
      scale = Op("Mul", {code, g}, base + "_scale");
    }
    std::string v = Op("Div", {blocks, scale}, base + "_scaled");
    if (f.scale == DType::kF8E4M3) {  // a zero block scale gives zero elements
      v = Op("Where", {Op("Equal", {scale, Scalar(base + "_zero_scale", 0.f)}, base + "_scale_is_zero"),
                       Scalar(base + "_zero_element", 0.f), v},
             base + "_elements");
    }
    const std::string q = RoundToElement(base, v, element);
    std::string y = Op("Mul", {q, scale}, base + "_dequantized");
    y = Op("Reshape", {y, shape}, base + "_unblocked");
    if (padded != channels) {
      y = Op("Slice", {y, Int64s(base + "_out_starts", {0}), Int64s(base + "_out_ends", {channels}),
                       Int64s(base + "_out_axes", {1})},
             base);
    }
    return y;
  }

  // OCP MX's E8M0 block scale 2^(floor(log2 amax) - emax), clamped to
  // 2^-127..2^127 (Note [Block scaling]). ONNX has no exponent extraction: Log
  // gives floor(log2 amax) to within one, and comparing amax with the two
  // neighbouring powers of two (a table of exact 2^k) corrects it.
  std::string E8m0Scale(const std::string& base, const std::string& amax, const MiniFloatFormat& element) {
    constexpr int kLow = -150, kCount = 279;  // table[k] = 2^(k - 150): 0 (underflow), 2^-149 .. 2^128 (inf)
    std::vector<float> table(kCount);
    for (int k = 0; k < kCount; ++k) table[k] = std::ldexp(1.0f, k + kLow);
    const std::string powers = Floats(base + "_powers_of_two", table, {kCount});
    auto power = [&](const std::string& exponent, const std::string& name) {  // table[exponent - kLow]
      std::string index = Op("Add", {exponent, Scalar(name + "_offset", static_cast<float>(-kLow))}, name + "_index");
      onnx::NodeProto* gather =
          Node("Gather", {powers, Cast(index, onnx::TensorProto::INT64, name + "_index_i64")}, name, name);
      Int(gather, "axis", 0);
      return name;
    };
    std::string log2 = Op("Div", {Op("Log", {amax}, base + "_log_amax"), Scalar(base + "_ln2", std::log(2.0f))},
                          base + "_log2_amax");
    std::string e0 = Op("Clip", {Op("Floor", {log2}, base + "_e_estimate"), Scalar(base + "_e_min", -149.f),
                                 Scalar(base + "_e_max", 127.f)},
                        base + "_e0");
    std::string below = power(e0, base + "_pow_e0");
    std::string above = power(Op("Add", {e0, Scalar(base + "_plus_one", 1.f)}, base + "_e0_plus_1"), base + "_pow_e1");
    std::string too_high =
        Cast(Op("Greater", {below, amax}, base + "_e0_high"), onnx::TensorProto::FLOAT, base + "_e0_high_f");
    std::string too_low =
        Cast(Op("LessOrEqual", {above, amax}, base + "_e0_low"), onnx::TensorProto::FLOAT, base + "_e0_low_f");
    std::string e = Op("Add", {Op("Sub", {e0, too_high}, base + "_e_down"), too_low}, base + "_exponent");
    const float emax = static_cast<float>(MaxExponent(element));
    std::string shared = Op("Clip", {Op("Sub", {e, Scalar(base + "_emax", emax)}, base + "_shared_raw"),
                                     Scalar(base + "_shared_min", -127.f), Scalar(base + "_shared_max", 127.f)},
                            base + "_shared_exponent");
    return power(shared, base + "_scale");
  }

  // v rounded to the element format, half to even, saturating at its largest
  // value (EncodeMiniFloat): FP8 through Cast; FP6 and FP4, which ONNX Runtime
  // cannot cast to, as Round(v * u) / u with u = 2^(man_bits - e) for v's binade
  // e (exact powers of two; ONNX's Round is half to even).
  std::string RoundToElement(const std::string& base, const std::string& v, const MiniFloatFormat& element) {
    if (element.dtype == DType::kF8E4M3 || element.dtype == DType::kF8E5M2) {
      const int to = element.dtype == DType::kF8E4M3 ? kOnnxFloat8E4M3FN : kOnnxFloat8E5M2;
      return Cast(Cast(v, to, base + "_codes"), onnx::TensorProto::FLOAT, base + "_rounded");
    }
    const int emax = MaxExponent(element), emin = 1 - element.bias;
    const std::string a = Op("Abs", {v}, base + "_element_abs");
    std::string u = Scalar(absl::StrCat(base, "_units_e", emax), std::ldexp(1.0f, element.man_bits - emax));
    for (int e = emax - 1; e >= emin; --e) {
      std::string name = absl::StrCat(base, "_units_below_e", e + 1);
      u = Op("Where", {Op("Less", {a, Scalar(name + "_bound", std::ldexp(1.0f, e + 1))}, name + "_in"),
                       Scalar(absl::StrCat(base, "_units_e", e), std::ldexp(1.0f, element.man_bits - e)), u},
             name);
    }
    std::string k = Op("Round", {Op("Mul", {v, u}, base + "_in_units")}, base + "_units_rounded");
    return Op("Clip", {Op("Div", {k, u}, base + "_unclipped"), Scalar(base + "_element_low", -element.max),
                       Scalar(base + "_element_high", element.max)},
              base + "_rounded");
  }

  std::string Emit(int i) {
    const IntegerNode& n = model_.node(i);
    std::string base = absl::StrCat("v", i, "_", n.name);
    int in = n.inputs[0];
    switch (n.kind) {
      case NodeKind::kInput: break;
      case NodeKind::kQuantize: return n.block ? BlockActivation(i, Float(in)) : QuantizeOutput(i, Float(in));
      case NodeKind::kDequantize: return Float(in);
      case NodeKind::kConv2d:
      case NodeKind::kLinear: {
        std::string w = n.block ? BlockWeight(n, base) : Weight(n, base);
        std::vector<std::string> inputs = {Float(in), w};
        // Note [Bias after the convolution]: a Conv's bias goes out as an Add of
        // its own. ONNX Runtime rounds a Conv bias input to int32 on the s_in *
        // s_w grid once the inputs are DequantizeLinear outputs; the integer
        // model adds it in f32, and at 4 bits that rounding moved 0.9% of the
        // test set's top-1. Gemm's bias is left alone by it.
        const bool conv = n.kind == NodeKind::kConv2d;
        if (n.bias.defined() && !conv) inputs.push_back(Floats(base + "_bias", n.bias.ToVector<float>(), {n.bias.numel()}));
        std::string y = base + (conv ? "_conv" : "_gemm");
        onnx::NodeProto* op = Node(conv ? "Conv" : "Gemm", inputs, y, y);
        if (n.kind == NodeKind::kConv2d) {
          const Conv2dOptions& c = n.conv;
          Ints(op, "kernel_shape", {n.weight.size(2), n.weight.size(3)});
          Ints(op, "strides", {c.stride[0], c.stride[1]});
          Ints(op, "pads", {c.padding[0], c.padding[1], c.padding[0], c.padding[1]});
          Ints(op, "dilations", {c.dilation[0], c.dilation[1]});
          Int(op, "group", c.groups);
          if (n.bias.defined()) {
            std::string b = Floats(base + "_bias", n.bias.ToVector<float>(), {n.bias.numel(), 1, 1});
            Node("Add", {y, b}, base + "_biased", base + "_biased");
            y = base + "_biased";
          }
        }
        if (n.residual >= 0) {
          Node("Add", {y, Float(n.residual)}, base + "_add", base + "_add");
          y = base + "_add";
        }
        if (n.relu) {
          Node("Relu", {y}, base + "_relu", base + "_relu");
          y = base + "_relu";
        }
        return n.out_dtype == DType::kF32 ? y : QuantizeOutput(i, y);
      }
      case NodeKind::kMaxPool2d: {
        const Pool2dOptions& p = n.pool;
        int64_t sh = p.stride[0] == 0 ? p.kernel[0] : p.stride[0], sw = p.stride[1] == 0 ? p.kernel[1] : p.stride[1];
        std::string y = base + "_pool";
        onnx::NodeProto* op = Node("MaxPool", {Float(in)}, y, y);
        Ints(op, "kernel_shape", {p.kernel[0], p.kernel[1]});
        Ints(op, "strides", {sh, sw});
        Ints(op, "pads", {p.padding[0], p.padding[1], p.padding[0], p.padding[1]});
        Ints(op, "dilations", {p.dilation[0], p.dilation[1]});
        return n.out_dtype == DType::kF32 ? y : QuantizeOutput(i, y);
      }
      case NodeKind::kGlobalAvgPool: {
        Node("GlobalAveragePool", {Float(in)}, base + "_gap", base + "_gap");
        onnx::NodeProto* f = Node("Flatten", {base + "_gap"}, base, base);
        Int(f, "axis", 1);
        return base;
      }
      case NodeKind::kFlatten: {
        // Flatten takes any element type: a quantized value stays quantized.
        onnx::NodeProto* f = Node("Flatten", {names_[in]}, base, base);
        Int(f, "axis", 1);
        if (n.out_dtype != DType::kF32) qparams_names_[i] = qparams_names_.at(in);
        return base;
      }
      case NodeKind::kShortcutPad: {
        constexpr int64_t kEnd = std::numeric_limits<int64_t>::max();
        std::string sliced = base + "_slice";
        Node("Slice",
             {Float(in), Int64s(base + "_starts", {0, 0}), Int64s(base + "_ends", {kEnd, kEnd}),
              Int64s(base + "_axes", {2, 3}), Int64s(base + "_steps", {n.stride, n.stride})},
             sliced, sliced);
        Node("Pad", {sliced, Int64s(base + "_pads", {0, n.pad_before, 0, 0, 0, n.pad_after, 0, 0})}, base, base);
        return base;
      }
    }
    throw Error(absl::StrCat("export_onnx: node ", i, " (", NodeKindName(n.kind), ") has no ONNX form"));
  }

  const IntegerModel& model_;
  onnx::GraphProto* graph_;
  std::vector<std::string> names_;
  std::map<int, std::string> float_views_;
  std::map<int, std::pair<std::string, std::string>> qparams_names_;
};

absl::Status CheckModel(onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true, /*strict=*/1));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("onnx checker: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> OnnxBytes(const IntegerModel& model, const Shape& input_shape) {
  bool block = false;
  for (const IntegerNode& n : model.nodes()) block = block || n.block.has_value();
  onnx::ModelProto proto;
  proto.set_ir_version(block ? kBlockIrVersion : onnx::IR_VERSION);
  proto.set_producer_name("quanta");
  proto.set_producer_version("0.1");
  auto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(block ? kBlockOpset : kOpset);
  onnx::GraphProto* graph = proto.mutable_graph();
  graph->set_name("quanta_integer_model");
  try {
    Emitter(model, graph).Run(input_shape);
  } catch (const Error& e) {
    return absl::InvalidArgumentError(e.what());
  }
  // Debian's ONNX 1.12 checker cannot read a block model (Note [Block formats in
  // ONNX]); ONNX Runtime checks those as it loads them.
  if (!block) {
    absl::Status checked = CheckModel(proto);
    if (!checked.ok()) return checked;
  }
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) return absl::InternalError("export_onnx: protobuf serialization failed");
  return bytes;
}

std::string OnnxForm(const IntegerModel& model) {
  for (const IntegerNode& n : model.nodes()) {
    if (n.block) {
      return absl::StrCat("ONNX opset ", kBlockOpset, " with block formats, unchecked by Debian's ONNX 1.12");
    }
  }
  return absl::StrCat("ONNX QDQ, opset ", kOpset, ", checked");
}

absl::Status ExportOnnx(const IntegerModel& model, const std::string& path, const Shape& input_shape) {
  absl::StatusOr<std::string> bytes = OnnxBytes(model, input_shape);
  if (!bytes.ok()) return bytes.status();
  return WriteFileAtomically(path, *bytes);
}

absl::Status CheckOnnx(const std::string& bytes) {
  onnx::ModelProto proto;
  if (!proto.ParseFromString(bytes)) return absl::InvalidArgumentError("onnx: not a serialized ModelProto");
  return CheckModel(proto);
}

}  // namespace quanta::quant

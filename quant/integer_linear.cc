// IntegerLinear: weights from the weight quantizer (or max-abs), activations
// static or dynamic, one QuantizedMatmul with the bias fused. IntegerEmbedding:
// int8 rows with a scale each.
#include "quant/integer_linear.h"

#include <algorithm>
#include <cmath>

#include "core/grad_mode.h"
#include "quant/quantizer.h"

namespace quanta::quant {

namespace {

// Per-row parameters of a weight w (rows, cols): the weight quantizer's scales
// and range when the layer was prepared (ready, symmetric, per row or per
// tensor), else 8-bit max-abs per row. Zero points are 0.
QuantParams RowParams(const Tensor& w, const nn::Layer* weight_quant, const char* op) {
  int64_t rows = w.size(0);
  std::vector<double> scales(rows);
  auto* wq = dynamic_cast<const Quantizer*>(weight_quant);
  if (wq == nullptr) {
    std::vector<float> m = Max(Abs(w), {1}).ToVector<float>();
    for (int64_t r = 0; r < rows; ++r) scales[r] = m[r] > 0 ? m[r] / 127.0 : 1.0;
    return QuantParams::PerChannel(scales, std::vector<int64_t>(rows, 0), 0).WithRange(-127, 127);
  }
  QUANTA_CHECK(dynamic_cast<const ApotQuantizer*>(wq) == nullptr, op, ": APoT weights (", w.Describe(),
               ") convert through quant::Convert's integer models, not IntegerLinear; use a uniform quantizer here");
  const QuantSpec& spec = wq->spec();
  QUANTA_CHECK(wq->ready() && spec.symmetric && (!spec.per_channel || spec.axis == 0), op,
               ": the weight quantizer of ", w.Describe(), " has no symmetric per-row range yet");
  std::vector<float> s = wq->Params().first.ToVector<float>();
  for (int64_t r = 0; r < rows; ++r) scales[r] = s[s.size() == 1 ? 0 : r];
  return QuantParams::PerChannel(scales, std::vector<int64_t>(rows, 0), 0).WithRange(spec.quant_min(), spec.quant_max());
}

}  // namespace

std::shared_ptr<IntegerLinear> IntegerLinear::From(const nn::Linear& linear, const IntegerLinearOptions& options) {
  NoGradGuard no_grad;
  auto out = std::make_shared<IntegerLinear>();
  QUANTA_CHECK(options.dynamic_bits >= 2 && options.dynamic_bits <= 8, "integer_linear: dynamic_bits ",
               options.dynamic_bits, " outside [2, 8] (", linear.weight.Describe(), ")");
  out->dynamic = options.dynamic;
  out->dynamic_bits = options.dynamic_bits;
  Tensor w = linear.weight.Detach().To(Device::Cpu()).To(DType::kF32).Contiguous();  // (N, K)
  // Stored (K, N), per output column: quantizing the transposed weight with the
  // rows' parameters on axis 1 gives the same integers.
  QuantParams cols = RowParams(w, linear.weight_quant.get(), "integer_linear");
  cols.axis = 1;
  out->weight = Quantize(w.Transpose(0, 1).Contiguous(), DType::kQInt8, cols);
  if (cols.quant_min >= -8 && cols.quant_max <= 7) out->weight = PackQInt4(out->weight);
  if (linear.bias.defined()) out->bias = linear.bias.Detach().To(Device::Cpu()).To(DType::kF32).Clone();
  if (!options.dynamic) {
    auto* aq = dynamic_cast<const Quantizer*>(linear.input_quant.get());
    QUANTA_CHECK(aq != nullptr && aq->ready(), "integer_linear: a static conversion needs a prepared and calibrated "
                 "input quantizer (", w.Describe(), "); use dynamic activations otherwise");
    auto [s, z] = aq->Params();
    double scale = s.ToVector<float>()[0], zero = std::rint(z.ToVector<float>()[0]);  // an integer already
    // Stored as quint8 whatever the spec's sign: a signed range [qmin, qmax]
    // with zero point z as [0, qmax - qmin] with z - qmin, the same real values
    // (as quant::Convert's integer models store activations). oneDNN takes u8
    // sources as they are, and a 7-bit range stays [0, 127], which CPUs without
    // VNNI run without splitting weights (Note [Exact integers without VNNI] in
    // backends/cpu/onednn.cc); as s8 it would reach them shifted by 128.
    const QuantSpec& spec = aq->spec();
    const int64_t qmin = spec.quant_min(), qmax = spec.quant_max();
    out->input_dtype = DType::kQUInt8;
    out->input_params = QuantParams::PerTensor(scale, static_cast<int64_t>(zero) - qmin).WithRange(0, qmax - qmin);
  }
  Device device = linear.weight.device();
  if (!device.is_cpu()) {
    out->weight = out->weight.To(device);
    if (out->bias.defined()) out->bias = out->bias.To(device);
  }
  out->weight.storage()->MarkConstant();
  return out;
}

// Note [GELU into the next quantizer]: in BERT's FFN, y = GELU(x W1 + b1) feeds
// a Linear whose input quantizer maps y to quint8. Done separately, the int8 GEMM
// writes f32 (B T, 4H), GELU reads and writes it, the quantize pass reads it
// again. Fused, the GEMM epilogue computes the real result, applies the exact
// GELU, and quantizes with the next layer's static parameters: one u8 write,
// the same formula as the fake-quant model (quantize(GELU(real))) up to the
// epilogue's f32 arithmetic (one quantization step at a rounding boundary).
void IntegerLinear::FuseGeluAndQuantize(DType dtype, const QuantParams& params) {
  QUANTA_CHECK(!dynamic && (dtype == DType::kQUInt8 || dtype == DType::kQInt8) && params.scheme == QScheme::kPerTensor,
               "integer_linear: GELU fusion needs a static layer and per-tensor quint8/qint8 output parameters");
  gelu = true;
  output_dtype = dtype;
  output_params = params;
}

Tensor IntegerLinear::QuantizeInput(const Tensor& x) const {
  QUANTA_CHECK(!dynamic, "integer_linear: QuantizeInput needs static input parameters (", x.Describe(), ")");
  NoGradGuard no_grad;
  return Quantize(x.To(DType::kF32), input_dtype, input_params);
}

bool IntegerLinear::SameInputAs(const IntegerLinear& other) const {
  return !dynamic && !other.dynamic && input_dtype == other.input_dtype &&
         input_params.scales == other.input_params.scales && input_params.zero_points == other.input_params.zero_points &&
         input_params.quant_min == other.input_params.quant_min && input_params.quant_max == other.input_params.quant_max;
}

Tensor IntegerLinear::Forward(const Tensor& x) {
  NoGradGuard no_grad;
  int64_t K = weight.size(0), N = weight.size(1);
  QUANTA_CHECK(x.dim() >= 1 && x.size(-1) == K, "integer_linear: input ", x.Describe(), " does not end in ", K);
  Shape out_shape = x.shape();
  out_shape.back() = N;
  IntegerPostOps post{.gelu = gelu};
  Tensor q;
  if (x.is_quantized()) {  // quantized by the previous layer (a fused GELU) or shared (QuantizeInput)
    QUANTA_CHECK(!dynamic && x.dtype() == input_dtype && x.qparams().scales == input_params.scales &&
                     x.qparams().zero_points == input_params.zero_points,
                 "integer_linear: a quantized input ", x.Describe(), " must carry this layer's input parameters");
    q = x.Reshape({-1, K});
  } else if (dynamic) {
    // The batch's own range, widened to hold 0, as quint8 in [0, 2^bits - 1]
    // (PyTorch's dynamic quantization; it uses 7 bits).
    // Row ranges first: rows run in parallel as dense reductions, then one short pass.
    Tensor x2 = x.To(DType::kF32).Reshape({-1, K});
    double lo = std::min(0.0, static_cast<double>(Min(Min(x2, {1})).item<float>()));
    double hi = std::max(0.0, static_cast<double>(Max(Max(x2, {1})).item<float>()));
    // Note [Range to parameters] in quant/observer.h: the observers' rule, unsigned affine.
    const QuantSpec spec{.bits = dynamic_bits, .is_signed = false, .symmetric = false};
    RangeParams p = ParamsForRange(static_cast<float>(lo), static_cast<float>(hi), spec);
    q = Quantize(x2, DType::kQUInt8,
                 QuantParams::PerTensor(p.scale, p.zero_point).WithRange(spec.quant_min(), spec.quant_max()));
    post.varying_input_scale = true;  // Note [Run-time output scales] in backends/cpu/onednn.cc
  } else {
    q = Quantize(x.To(DType::kF32).Reshape({-1, K}), input_dtype, input_params);
  }
  if (gelu) return QuantizedMatmul(q, weight, bias, output_dtype, &output_params, post).Reshape(out_shape);
  return QuantizedMatmul(q, weight, bias, DType::kF32, nullptr, post).Reshape(out_shape);
}

int64_t IntegerLinear::Bytes() const {
  return StorageBytes(weight.dtype(), weight.numel()) + 4 * weight.size(1) + (bias.defined() ? 4 * bias.numel() : 0);
}

std::shared_ptr<IntegerEmbedding> IntegerEmbedding::From(const nn::Embedding& embedding) {
  NoGradGuard no_grad;
  Tensor w = embedding.weight.Detach().To(Device::Cpu()).To(DType::kF32).Contiguous();  // (num, dim)
  int64_t num = w.size(0), dim = w.size(1);
  // The quantizer's own rounding (Note [One quantization formula]), then plain int8 storage.
  QuantParams rows = RowParams(w, embedding.weight_quant.get(), "integer_embedding");
  std::vector<int32_t> q = Quantize(w, DType::kQInt8, rows).IntRepr();
  std::vector<float> scales(rows.scales.begin(), rows.scales.end());
  auto out = std::make_shared<IntegerEmbedding>();
  out->table = Tensor::FromVector<int32_t>(q, {num, dim}).To(DType::kI8);
  out->scale = Tensor::FromVector<float>(scales, {num, 1});
  Device device = embedding.weight.device();
  if (!device.is_cpu()) {
    out->table = out->table.To(device);
    out->scale = out->scale.To(device);
  }
  return out;
}

Tensor IntegerEmbedding::Forward(const Tensor& indices) {
  NoGradGuard no_grad;
  QUANTA_CHECK(IsIntegral(indices.dtype()), "integer_embedding: indices must be integers, got ", indices.Describe());
  Tensor flat = indices.Reshape({indices.numel()});
  Shape shape = indices.shape();
  shape.push_back(table.size(1));
  // scale * q in f32, as the fake quantizer's dequantization computes it.
  return Mul(IndexSelect(table, 0, flat).To(DType::kF32), IndexSelect(scale, 0, flat)).View(shape);
}

}  // namespace quanta::quant

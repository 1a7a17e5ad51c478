// One conformance table for every kernel op (after ggml's test-backend-ops):
// each row of kRows builds inputs for one op of core/ops.def over its dtypes,
// and every backend present runs it against the CPU reference kernels
// (cpu::ReferenceModeGuard), with the tolerance beside the row. The reference
// kernels themselves are held to hand-computed values in tests/core/ops_test.cc;
// this table holds the fast paths (oneDNN on the CPU; every CUDA kernel) to
// them. A new op fails EveryKernelOpHasOneRow until its row exists.
//
// Backends: "cpu" (the CPU backend as it dispatches by default: oneDNN for
// matmul, convolutions and the integer ops, and the row asserts that oneDNN
// ran for the dtypes listed in cpu_fast) and "cuda" (with --config=cuda on a
// machine with a GPU; skipped, saying why, otherwise).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/backend.h"
#include "core/generator.h"
#include "core/ops.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

// |got - want| <= atol + rtol * |want| for floating outputs; quantized outputs
// may differ by `steps` integer levels (requantized rounding ties), integer and
// bool outputs not at all.
struct Tol {
  double atol = 0, rtol = 0;
  int steps = 0;
};

// Per dtype: a few ulps of the dtype (math libraries differ in the last place).
struct Tols {
  Tol f32{1e-6, 2e-6}, f64{1e-12, 1e-12}, f16{1e-3, 1e-3}, bf16{1e-2, 8e-3};
  Tol For(DType d) const {
    switch (d) {
      case DType::kF64: return f64;
      case DType::kF16: return f16;
      case DType::kBF16: return bf16;
      default: return f32;
    }
  }
};

// Reductions and products sum K terms in another order: the error grows with K.
constexpr Tols kSums{{1e-5, 1e-5}, {1e-12, 1e-12}, {2e-2, 1e-2}, {1e-1, 2e-2}};

using Inputs = std::vector<Tensor>;
struct Row {
  Op op;
  std::vector<DType> dtypes;
  // Inputs for one dtype, on the CPU.
  std::function<Inputs(DType, Generator&)> make;
  // Runs the op through its frontend on inputs already on `device`.
  std::function<std::vector<Tensor>(const Inputs&, const Device&)> run;
  Tols tol = {};
  // Dtypes for which the CPU backend must take its fast path (no fallback).
  std::vector<DType> cpu_fast = {};
};

const std::vector<DType> kFloats = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16};
const std::vector<DType> kNumbers = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kI64};

Inputs One(Tensor t) { return {std::move(t)}; }
std::vector<Tensor> Out(Tensor t) { return {std::move(t)}; }

Conv2dOptions ConvOptions(int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  Conv2dOptions o;
  o.stride[0] = o.stride[1] = stride;
  o.padding[0] = o.padding[1] = padding;
  o.dilation[0] = o.dilation[1] = dilation;
  o.groups = groups;
  return o;
}

// An input that exercises strides: a transposed view of a random matrix.
Tensor Strided(const Shape& shape, DType d, Generator& gen, double lo, double hi) {
  Shape t = shape;
  std::swap(t[t.size() - 1], t[t.size() - 2]);
  return Uniform(t, lo, hi, &gen).To(d).Transpose(-1, -2);
}

std::vector<Row> MakeRows() {
  std::vector<Row> rows;
  // ---- unary: positive inputs where the function needs them; round at ties.
#define QUANTA_UNARY_ROW(Name, str)                                                                 \
  rows.push_back({Op::k##Name, std::string(str) == "neg" || std::string(str) == "abs" ||            \
                                       std::string(str) == "relu"                                  \
                                   ? kNumbers                                                      \
                                   : kFloats,                                                      \
                  [](DType d, Generator& gen) {                                                    \
                    std::string op = str;                                                          \
                    if (op == "round") return One((Arange(-20, 20).To(d) * Scalar(0.25, d)).View({8, 5})); \
                    bool positive = op == "log" || op == "sqrt" || op == "rsqrt";                  \
                    return One(d == DType::kI64 ? Arange(-20, 20, 1, d).View({8, 5})               \
                                                : Strided({7, 33}, d, gen, positive ? 0.1 : -3, 3)); \
                  },                                                                               \
                  [](const Inputs& in, const Device&) { return Out(Name(in[0])); }});
  QUANTA_UNARY_OPS(QUANTA_UNARY_ROW)
#undef QUANTA_UNARY_ROW
  // ---- binary: broadcast operands; pow on a positive base; integer division excluded.
#define QUANTA_BINARY_ROW(Name, str)                                                             \
  rows.push_back({Op::k##Name,                                                                  \
                  std::string(str) == "div" || std::string(str) == "pow" ? kFloats : kNumbers,  \
                  [](DType d, Generator& gen) {                                                 \
                    if (d == DType::kI64) {                                                     \
                      return Inputs{Arange(-12, 12, 1, d).View({4, 1, 6}),                      \
                                    Arange(-15, 15, 1, d).View({5, 6})};                        \
                    }                                                                           \
                    return Inputs{Uniform({4, 1, 33}, 0.2, 2, &gen).To(d),                      \
                                  Uniform({5, 33}, 0.5, 2, &gen).To(d)};                        \
                  },                                                                            \
                  [](const Inputs& in, const Device&) { return Out(Name(in[0], in[1])); }});
  QUANTA_BINARY_OPS(QUANTA_BINARY_ROW)
#undef QUANTA_BINARY_ROW
  // ---- comparisons: equal elements included (both operands rounded to quarters).
#define QUANTA_COMPARE_ROW(Name, str)                                                                \
  rows.push_back({Op::k##Name, kNumbers,                                                            \
                  [](DType d, Generator& gen) {                                                     \
                    auto quarters = [&](const Shape& s) {                                           \
                      return (Round(Uniform(s, -4, 4, &gen) * Scalar(4)) * Scalar(0.25)).To(d);     \
                    };                                                                              \
                    return Inputs{quarters({4, 1, 9}), quarters({5, 9})};                           \
                  },                                                                                \
                  [](const Inputs& in, const Device&) { return Out(Name(in[0], in[1])); }});
  QUANTA_COMPARE_OPS(QUANTA_COMPARE_ROW)
#undef QUANTA_COMPARE_ROW
  // ---- reductions over one dim, two dims and all.
  auto reduce_input = [](DType d, Generator& gen) {
    return One(d == DType::kI64 ? Arange(-30, 30, 1, d).View({3, 4, 5}) : Normal({6, 7, 33}, 0, 1, &gen).To(d));
  };
  rows.push_back({Op::kSum, kNumbers, reduce_input,
                  [](const Inputs& in, const Device&) {
                    return std::vector<Tensor>{Sum(in[0], {1}), Sum(in[0], {0, 2}, true), Sum(in[0])};
                  },
                  kSums});
  rows.push_back({Op::kMax, kNumbers, reduce_input, [](const Inputs& in, const Device&) {
                    return std::vector<Tensor>{Max(in[0], {2}), Max(in[0], {0, 1}), Max(in[0])};
                  }});
  rows.push_back({Op::kMin, kNumbers, reduce_input, [](const Inputs& in, const Device&) {
                    return std::vector<Tensor>{Min(in[0], {0}), Min(in[0], {1, 2}, true), Min(in[0])};
                  }});
  rows.push_back({Op::kArgmax, kNumbers, reduce_input, [](const Inputs& in, const Device&) {
                    return std::vector<Tensor>{Argmax(in[0], 1), Argmax(in[0], 2, true)};
                  }});
  // ---- copies, creation, selection.
  rows.push_back({Op::kCopy, kNumbers,
                  [](DType d, Generator& gen) { return One(Normal({9, 17}, 0, 20, &gen).To(d)); },
                  [](const Inputs& in, const Device&) {
                    std::vector<Tensor> out = {in[0].Transpose(0, 1).Contiguous(), in[0].Slice(1, 1, 17, 3).Contiguous()};
                    for (DType to : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI8, DType::kBool}) {
                      out.push_back(in[0].Transpose(0, 1).To(to));
                    }
                    return out;
                  }});
  // Creation ops have no inputs: a zero-size tensor carries the row's dtype.
  rows.push_back({Op::kFill, kNumbers, [](DType d, Generator&) { return One(Zeros({0}, d)); },
                  [](const Inputs& in, const Device& device) {
                    return Out(Full({13, 7}, -3, in[0].dtype(), device));
                  }});
  rows.push_back({Op::kArange, kNumbers, [](DType d, Generator&) { return One(Zeros({0}, d)); },
                  [](const Inputs& in, const Device& device) {
                    bool integral = in[0].dtype() == DType::kI64;
                    return std::vector<Tensor>{Arange(-5, 40, integral ? 3 : 0.5, in[0].dtype(), device),
                                               Arange(7, -2, -1, in[0].dtype(), device)};
                  }});
  rows.push_back({Op::kWhere, kNumbers,
                  [](DType d, Generator& gen) {
                    return Inputs{Gt(Normal({4, 1, 9}, 0, 1, &gen), Scalar(0)), Normal({5, 9}, 0, 5, &gen).To(d),
                                  Normal({4, 5, 1}, 0, 5, &gen).To(d)};
                  },
                  [](const Inputs& in, const Device&) { return Out(Where(in[0], in[1], in[2])); }});
  // ---- linear algebra: batched and broadcast, a transposed operand.
  rows.push_back({Op::kMatmul, kFloats,
                  [](DType d, Generator& gen) {
                    return Inputs{Normal({3, 37, 64}, 0, 1, &gen).To(d), Normal({64, 29}, 0, 1, &gen).To(d),
                                  Normal({3, 1, 29, 64}, 0, 1, &gen).To(d)};
                  },
                  [](const Inputs& in, const Device&) {
                    return std::vector<Tensor>{Matmul(in[0], in[1]), Matmul(in[0], in[2].Transpose(-1, -2))};
                  },
                  kSums, {DType::kF32, DType::kBF16}});
  // Convolutions: padded and strided, dilated, grouped, with and without bias.
  struct ConvCase {
    Shape x, w;
    Conv2dOptions o;
  };
  static const std::vector<ConvCase> kConvs = {{{2, 3, 12, 12}, {8, 3, 3, 3}, ConvOptions(1, 1, 1, 1)},
                                               {{2, 4, 11, 9}, {6, 4, 3, 3}, ConvOptions(2, 1, 1, 1)},
                                               {{1, 4, 13, 13}, {4, 4, 3, 3}, ConvOptions(1, 2, 2, 1)},
                                               {{2, 8, 10, 10}, {8, 2, 3, 3}, ConvOptions(1, 1, 1, 4)}};
  auto conv_inputs = [](DType d, Generator& gen) {
    Inputs in;
    for (const ConvCase& c : kConvs) {
      Tensor x = Normal(c.x, 0, 1, &gen).To(d), w = Normal(c.w, 0, 0.3, &gen).To(d);
      in.push_back(x);
      in.push_back(w);
      in.push_back(Normal({c.w[0]}, 0, 1, &gen).To(d));
      in.push_back(Normal(Conv2d(x, w, Tensor(), c.o).shape(), 0, 1, &gen).To(d));  // an upstream gradient
    }
    return in;
  };
  const std::vector<DType> conv_dtypes = {DType::kF32, DType::kF64, DType::kBF16};
  rows.push_back({Op::kConv2d, conv_dtypes, conv_inputs,
                  [](const Inputs& in, const Device&) {
                    std::vector<Tensor> out;
                    for (size_t i = 0; i < kConvs.size(); ++i) {
                      out.push_back(Conv2d(in[4 * i], in[4 * i + 1], i % 2 ? Tensor() : in[4 * i + 2], kConvs[i].o));
                    }
                    return out;
                  },
                  kSums, {DType::kF32, DType::kBF16}});
  rows.push_back({Op::kConv2dBackwardInput, conv_dtypes, conv_inputs,
                  [](const Inputs& in, const Device&) {
                    std::vector<Tensor> out;
                    for (size_t i = 0; i < kConvs.size(); ++i) {
                      out.push_back(Conv2dBackwardInput(in[4 * i + 3], in[4 * i + 1], kConvs[i].x, kConvs[i].o));
                    }
                    return out;
                  },
                  kSums, {DType::kF32, DType::kBF16}});
  rows.push_back({Op::kConv2dBackwardWeight, conv_dtypes, conv_inputs,
                  [](const Inputs& in, const Device&) {
                    std::vector<Tensor> out;
                    for (size_t i = 0; i < kConvs.size(); ++i) {
                      out.push_back(Conv2dBackwardWeight(in[4 * i + 3], in[4 * i], kConvs[i].w, kConvs[i].o));
                    }
                    return out;
                  },
                  kSums, {DType::kF32, DType::kBF16}});
  // ---- pooling: 3x3 windows, stride 2, padding 1 (padding counts as -inf).
  auto pool = [](const Tensor& x) {
    OpAttrs attrs;
    attrs.kernel[0] = attrs.kernel[1] = 3;
    attrs.stride[0] = attrs.stride[1] = 2;
    attrs.padding[0] = attrs.padding[1] = 1;
    int64_t h = (x.size(2) + 2 - 3) / 2 + 1, w = (x.size(3) + 2 - 3) / 2 + 1;
    Tensor in = x.Contiguous();
    Tensor out[2] = {Tensor::Empty({x.size(0), x.size(1), h, w}, x.dtype(), x.device()),
                     Tensor::Empty({x.size(0), x.size(1), h, w}, DType::kI64, x.device())};
    Dispatch(Op::kMaxPool2d, {&in, 1}, out, attrs);
    return std::vector<Tensor>{out[0], out[1]};
  };
  rows.push_back({Op::kMaxPool2d, kFloats, [](DType d, Generator& gen) { return One(Normal({2, 3, 11, 10}, 0, 1, &gen).To(d)); },
                  [pool](const Inputs& in, const Device&) { return pool(in[0]); }});
  rows.push_back({Op::kMaxPool2dBackward, kFloats,
                  [pool](DType d, Generator& gen) {
                    Tensor x = Normal({2, 3, 11, 10}, 0, 1, &gen).To(d);
                    std::vector<Tensor> p = pool(x);
                    return Inputs{Normal(p[0].shape(), 0, 1, &gen).To(d), p[1]};
                  },
                  [](const Inputs& in, const Device&) { return Out(MaxPool2dBackward(in[0], in[1], {2, 3, 11, 10})); },
                  kSums});
  // ---- batch norm (training): a mean far from 0, planes of 7 x 6; each row
  // also runs the epilogue forms (Note [Batch norm epilogue]): relu(bn(x)) and
  // relu(bn(x) + residual), whose backward takes the statistics as inputs, so
  // every backend sees the same ReLU mask.
  auto bn_inputs = [](DType d, Generator& gen) {
    Tensor x = Add(Normal({4, 5, 7, 6}, 0, 2, &gen), 3.0).To(d);
    std::array<Tensor, 3> ref = BatchNormTraining(x, Ones({5}, d), Zeros({5}, d), 1e-5);
    return Inputs{x, Uniform({5}, 0.5, 1.5, &gen).To(d), Normal({5}, 0, 1, &gen).To(d),
                  Normal({4, 5, 7, 6}, 0, 1, &gen).To(d), ref[1], ref[2], Normal({4, 5, 7, 6}, 0, 1, &gen).To(d)};
  };
  rows.push_back({Op::kBatchNorm, kFloats, bn_inputs,
                  [](const Inputs& in, const Device&) {
                    std::vector<Tensor> out;
                    for (const Tensor& residual : {Tensor(), Tensor(), in[6]}) {
                      const bool relu = out.size() > 0;
                      std::array<Tensor, 3> o = BatchNormTraining(in[0], in[1], in[2], 1e-5, residual, relu);
                      out.insert(out.end(), o.begin(), o.end());
                    }
                    return out;
                  },
                  kSums});
  rows.push_back({Op::kBatchNormBackward, kFloats, bn_inputs,
                  [](const Inputs& in, const Device&) {
                    std::array<Tensor, 3> o = BatchNormBackward(in[3], in[0], in[1], in[4], in[5], 1e-5);
                    std::vector<Tensor> out(o.begin(), o.end());
                    for (const Tensor& residual : {Tensor(), in[6]}) {
                      std::array<Tensor, 4> r = BatchNormReluBackward(in[3], in[0], in[1], in[2], in[4], in[5], 1e-5, residual);
                      out.insert(out.end(), r.begin(), r.begin() + (residual.defined() ? 4 : 3));
                    }
                    return out;
                  },
                  kSums});
  // ---- layer norm over the last two dims (rows of 40 values, a mean far from 0)
  // and softmax along the last dim and an inner one.
  rows.push_back({Op::kLayerNorm, kFloats,
                  [](DType d, Generator& gen) {
                    return Inputs{Add(Normal({3, 5, 4, 10}, 0, 2, &gen), 3.0).To(d), Uniform({4, 10}, 0.5, 1.5, &gen).To(d),
                                  Normal({4, 10}, 0, 1, &gen).To(d)};
                  },
                  [](const Inputs& in, const Device&) {
                    std::array<Tensor, 3> o = NativeLayerNorm(in[0], in[1], in[2], 1e-5);
                    return std::vector<Tensor>(o.begin(), o.end());
                  },
                  kSums});
  rows.push_back({Op::kSoftmax, kFloats,
                  [](DType d, Generator& gen) { return One(Normal({3, 5, 37}, 0, 3, &gen).To(d)); },
                  [](const Inputs& in, const Device&) {
                    return std::vector<Tensor>{Softmax(in[0], -1), Softmax(in[0], 1)};
                  },
                  kSums});
  // ---- indexing: repeated indices (scatter_add sums them).
  auto index_inputs = [](DType d, Generator& gen) {
    std::vector<int64_t> idx(5 * 12);
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = (i * 7 + i / 3) % 9;
    return Inputs{Normal({5, 9}, 0, 3, &gen).To(d), Tensor::FromVector(idx, {5, 12}),
                  Normal({5, 12}, 0, 3, &gen).To(d)};
  };
  rows.push_back({Op::kGather, kNumbers, index_inputs,
                  [](const Inputs& in, const Device&) { return Out(Gather(in[0], 1, in[1])); }});
  rows.push_back({Op::kScatterAdd, kNumbers, index_inputs,
                  [](const Inputs& in, const Device&) { return Out(ScatterAdd({5, 9}, 1, in[1], in[2])); }, kSums});
  // ---- quantization: per tensor and per channel, qint8 / quint8 / qint4, a 3-bit range.
  auto quant_params = [](DType q) {
    std::vector<QuantParams> p = {QuantParams::PerTensor(0.03, q == DType::kQUInt8 ? 100 : -3),
                                  QuantParams::PerChannel({0.02, 0.05, 0.1, 0.04, 0.07}, {0, 1, -2, 3, 0}, 0)};
    if (q == DType::kQUInt8) p[1].zero_points = {128, 120, 130, 100, 140};
    p.push_back(p[0].WithRange(q == DType::kQUInt8 ? 96 : -4, q == DType::kQUInt8 ? 103 : 3));
    return p;
  };
  const std::vector<DType> quant_inputs = {DType::kF32, DType::kF64, DType::kBF16};
  rows.push_back({Op::kQuantize, quant_inputs,
                  [](DType d, Generator& gen) { return One(Normal({5, 37}, 0, 2, &gen).To(d)); },
                  [quant_params](const Inputs& in, const Device&) {
                    std::vector<Tensor> out;
                    for (DType q : {DType::kQInt8, DType::kQUInt8, DType::kQInt4}) {
                      for (const QuantParams& p : quant_params(q)) out.push_back(Quantize(in[0], q, p));
                    }
                    return out;
                  }});
  // Dequantize's row dtype is its output's: a zero-size first input carries it.
  rows.push_back({Op::kDequantize, kFloats,
                  [quant_params](DType d, Generator& gen) {
                    Tensor x = Normal({5, 37}, 0, 2, &gen);
                    Inputs in = {Zeros({0}, d)};
                    for (DType q : {DType::kQInt8, DType::kQUInt8, DType::kQInt4}) {
                      for (const QuantParams& p : quant_params(q)) in.push_back(Quantize(x, q, p));
                    }
                    return in;
                  },
                  [](const Inputs& in, const Device&) {
                    std::vector<Tensor> out;
                    for (size_t i = 1; i < in.size(); ++i) out.push_back(Dequantize(in[i], in[0].dtype()));
                    return out;
                  }});
  auto fq_inputs = [](DType d, Generator& gen) {
    Tensor x = Normal({5, 37}, 0, 1, &gen).To(d);
    return Inputs{x, Scalar(0.05, d).View({1}), Scalar(2, d).View({1}), Uniform({5}, 0.01, 0.1, &gen).To(d),
                  Round(Uniform({5}, -3, 3, &gen)).To(d), Normal({5, 37}, 0, 1, &gen).To(d)};
  };
  auto fq_options = [](bool per_channel, bool ewgs) {
    FakeQuantOptions o;
    o.quant_min = -8, o.quant_max = 7;
    o.axis = per_channel ? 0 : -1;
    o.gradient = ewgs ? FakeQuantGradient::kEwgs : FakeQuantGradient::kSte;
    o.ewgs_delta = ewgs ? 0.2 : 0;
    o.lsq_grad_scale = 0.1;
    return o;
  };
  rows.push_back({Op::kFakeQuantize, kFloats, fq_inputs, [fq_options](const Inputs& in, const Device&) {
                    return std::vector<Tensor>{FakeQuantize(in[0], in[1], in[2], fq_options(false, false)),
                                               FakeQuantize(in[0], in[3], in[4], fq_options(true, false))};
                  }});
  rows.push_back({Op::kFakeQuantizeBackward, kFloats, fq_inputs, [](const Inputs& in, const Device&) {
                    std::vector<Tensor> out;
                    Tensor s = in[3].View({5, 1}).Expand(in[0].shape()).Contiguous();
                    Tensor z = in[4].View({5, 1}).Expand(in[0].shape()).Contiguous();
                    for (int gradient : {0, 1}) {
                      OpAttrs attrs;
                      attrs.quant_min = -8, attrs.quant_max = 7;
                      attrs.fake_quant_gradient = gradient;
                      attrs.ewgs_delta = gradient ? 0.2 : 0;
                      attrs.lsq_grad_scale = 0.1;
                      for (const Tensor& t : FakeQuantizeBackward(in[5], in[0], s, z, attrs)) out.push_back(t);
                      // Some gradients only (an observer's quantizer: x's alone; symmetric LSQ: x's and the scale's).
                      for (std::array<bool, 3> needed : {std::array<bool, 3>{true, false, false}, {true, true, false}}) {
                        for (const Tensor& t : FakeQuantizeBackward(in[5], in[0], s, z, attrs, needed)) {
                          if (t.defined()) out.push_back(t);
                        }
                      }
                    }
                    return out;
                  }});
  // Block-scaled minifloats: MX (FP8, FP6, FP4), NVFP4, DeepSeek-V3's tiles and
  // (here 2 x 32) blocks, over (3, 4, 64) inputs with a zero block and a wide range.
  const std::vector<BlockFormat> block_formats = {
      BlockFormat::Mx(DType::kF8E4M3), BlockFormat::Mx(DType::kF8E5M2), BlockFormat::Mx(DType::kF6E2M3),
      BlockFormat::Mx(DType::kF6E3M2), BlockFormat::Mx(DType::kF4E2M1), BlockFormat::Nvfp4(),
      BlockFormat::Tile(64), BlockFormat::Block(2, DType::kF8E5M2)};
  auto block_input = [](Generator& gen) {
    Tensor x = Mul(Normal({3, 4, 64}, 0, 1, &gen), Exp(Normal({3, 4, 64}, 0, 3, &gen)));
    Tensor zero_block = x.Narrow(1, 2, 1).Narrow(2, 32, 32);
    FillInplace(zero_block, 0);
    return x;
  };
  rows.push_back({Op::kBlockQuantize, kFloats,
                  [block_input](DType d, Generator& gen) { return One(block_input(gen).To(d)); },
                  [block_formats](const Inputs& in, const Device&) {
                    std::vector<Tensor> out;
                    for (const BlockFormat& f : block_formats) {
                      BlockQuantized q = BlockQuantize(in[0], f);
                      out.push_back(q.codes);
                      out.push_back(q.scales);
                      out.push_back(q.tensor_scale);
                    }
                    return out;
                  }});
  // Block dequantize's row dtype is its output's: a zero-size first input carries it.
  rows.push_back({Op::kBlockDequantize, kFloats,
                  [block_input, block_formats](DType d, Generator& gen) {
                    Tensor x = block_input(gen);
                    Inputs in = {Zeros({0}, d)};
                    for (const BlockFormat& f : block_formats) {
                      BlockQuantized q = BlockQuantize(x, f);
                      in.insert(in.end(), {q.codes, q.scales, q.tensor_scale});
                    }
                    return in;
                  },
                  [block_formats](const Inputs& in, const Device&) {
                    std::vector<Tensor> out;
                    for (size_t k = 0; k < block_formats.size(); ++k) {
                      BlockQuantized q{in[1 + 3 * k], in[2 + 3 * k], in[3 + 3 * k], block_formats[k]};
                      out.push_back(BlockDequantize(q, in[0].dtype()));
                    }
                    return out;
                  }});
  // Integer layers: quint8 / qint8 activations, per-channel qint8 and qint4
  // weights, f32 and requantized outputs, the fused residual + ReLU.
  auto qmm_inputs = [](DType src, Generator& gen) {
    int64_t M = 33, K = 70, N = 19;
    QuantParams pa = src == DType::kQUInt8 ? QuantParams::PerTensor(4.0 / 255, 64) : QuantParams::PerTensor(4.0 / 255, -30);
    std::vector<double> scales(N);
    for (int64_t n = 0; n < N; ++n) scales[n] = 0.004 + 0.001 * n;
    Tensor bf = Normal({K, N}, 0, 0.2, &gen);
    QuantParams pb = QuantParams::PerChannel(scales, std::vector<int64_t>(N, 0), 1);
    return Inputs{Quantize(Uniform({M, K}, -1, 3, &gen), src, pa), Quantize(bf, DType::kQInt8, pb),
                  Quantize(bf, DType::kQInt4, pb), Normal({N}, 0, 1, &gen), Normal({M, N}, 0, 1, &gen)};
  };
  const std::vector<DType> int8_sources = {DType::kQUInt8, DType::kQInt8};
  Tols requantized;
  requantized.f32 = {1e-5, 1e-5, 1};
  rows.push_back({Op::kQuantizedMatmul, int8_sources, qmm_inputs,
                  [](const Inputs& in, const Device&) {
                    QuantParams po = QuantParams::PerTensor(0.05, 3), pu = QuantParams::PerTensor(0.05, 10);
                    IntegerPostOps post;
                    post.residual = in[4];
                    post.relu = true;
                    return std::vector<Tensor>{QuantizedMatmul(in[0], in[1], in[3]),
                                               QuantizedMatmul(in[0], in[2], Tensor()),
                                               QuantizedMatmul(in[0], in[1], in[3], DType::kQInt8, &po),
                                               QuantizedMatmul(in[0], in[1], in[3], DType::kQUInt8, &pu, post)};
                  },
                  requantized, int8_sources});
  auto qconv_inputs = [](DType src, Generator& gen) {
    QuantParams px = src == DType::kQUInt8 ? QuantParams::PerTensor(3.0 / 255, 40) : QuantParams::PerTensor(3.0 / 255, 7);
    std::vector<double> scales(16);
    for (size_t i = 0; i < scales.size(); ++i) scales[i] = 0.003 + 0.0005 * i;
    QuantParams pw = QuantParams::PerChannel(scales, std::vector<int64_t>(16, 0), 0);
    Tensor w = Normal({16, 8, 3, 3}, 0, 0.2, &gen);
    return Inputs{Quantize(Uniform({2, 8, 9, 9}, -0.5, 2, &gen), src, px), Quantize(w, DType::kQInt8, pw),
                  Quantize(w, DType::kQInt4, pw), Normal({16}, 0, 1, &gen), Normal({2, 16, 5, 5}, 0, 1, &gen)};
  };
  rows.push_back({Op::kQuantizedConv2d, int8_sources, qconv_inputs,
                  [](const Inputs& in, const Device&) {
                    Conv2dOptions o = ConvOptions(2, 1, 1, 1);
                    QuantParams po = QuantParams::PerTensor(0.03, -4), pu = QuantParams::PerTensor(0.03, 10);
                    IntegerPostOps post;
                    post.residual = in[4];
                    post.relu = true;
                    return std::vector<Tensor>{QuantizedConv2d(in[0], in[1], in[3], o),
                                               QuantizedConv2d(in[0], in[2], Tensor(), o),
                                               QuantizedConv2d(in[0], in[1], in[3], o, DType::kQInt8, &po),
                                               QuantizedConv2d(in[0], in[1], in[3], o, DType::kQUInt8, &pu, post)};
                  },
                  requantized, int8_sources});
  // ---- random: Philox by counter, the same numbers on every backend.
  auto random_dtype = [](DType d, Generator&) { return One(Zeros({0}, d)); };
  rows.push_back({Op::kUniform, kFloats, random_dtype, [](const Inputs& in, const Device& device) {
                    Generator gen(11);
                    return Out(Uniform({37, 29}, -2, 3, &gen, in[0].dtype(), device));
                  }});
  rows.push_back({Op::kNormal, kFloats, random_dtype, [](const Inputs& in, const Device& device) {
                    Generator gen(12);
                    return Out(Normal({37, 29}, 1, 2, &gen, in[0].dtype(), device));
                  }});
  rows.push_back({Op::kBernoulli, kFloats, random_dtype, [](const Inputs& in, const Device& device) {
                    Generator gen(13);
                    return Out(Bernoulli({37, 29}, 0.3, &gen, in[0].dtype(), device));
                  }});
  return rows;
}

const std::vector<Row>& Rows() {
  static const std::vector<Row>* rows = new std::vector<Row>(MakeRows());
  return *rows;
}

// A row per op: adding an op to ops.def fails here until its row exists.
static_assert(kNumOps == 63, "a new op needs its row in conformance_test.cc's table");
TEST(Conformance, EveryKernelOpHasOneRow) {
  std::vector<int> count(kNumOps, 0);
  for (const Row& r : Rows()) ++count[static_cast<int>(r.op)];
  for (int i = 0; i < kNumOps; ++i) {
    Op op = static_cast<Op>(i);
    EXPECT_EQ(count[i], IsStructural(op) ? 0 : 1) << OpName(op);
  }
}

// How far got is from want: the largest excess over the tolerance (<= 0 passes).
double Excess(const Tensor& got_dev, const Tensor& want, const Tol& tol, std::string* where) {
  Tensor got = got_dev.To(Device::Cpu());
  if (got.shape() != want.shape() || got.dtype() != want.dtype()) {
    *where = "got " + got.Describe() + ", want " + want.Describe();
    return INFINITY;
  }
  if (want.is_quantized()) {
    if (!(got.qparams() == want.qparams())) {
      *where = "quantization parameters " + got.qparams().ToString() + " against " + want.qparams().ToString();
      return INFINITY;
    }
    std::vector<int32_t> g = got.IntRepr(), w = want.IntRepr();
    double worst = -1;
    for (size_t i = 0; i < g.size(); ++i) {
      double e = std::abs(g[i] - w[i]) - tol.steps;
      if (e > worst) worst = e, *where = "element " + std::to_string(i) + ": " + std::to_string(g[i]) + " against " +
                                         std::to_string(w[i]);
    }
    return worst;
  }
  bool exact = !IsFloating(want.dtype());
  std::vector<double> g = got.To(DType::kF64).ToVector<double>(), w = want.To(DType::kF64).ToVector<double>();
  double worst = -1;
  for (size_t i = 0; i < g.size(); ++i) {
    double e;
    if (std::isnan(w[i]) || std::isnan(g[i])) {
      e = std::isnan(w[i]) == std::isnan(g[i]) ? -1 : INFINITY;
    } else if (std::isinf(w[i]) || std::isinf(g[i]) || exact) {
      e = g[i] == w[i] ? -1 : INFINITY;
    } else {
      e = std::abs(g[i] - w[i]) - (tol.atol + tol.rtol * std::abs(w[i]));
    }
    if (e > worst) worst = e, *where = "element " + std::to_string(i) + ": " + std::to_string(g[i]) + " against " +
                                       std::to_string(w[i]);
  }
  return worst;
}

// Every row, every dtype, on `device` against the CPU reference kernels.
void RunTable(const Device& device) {
  Backend& backend = GetBackend(device);
  int64_t compared = 0;
  std::string missing;
  for (const Row& row : Rows()) {
    if (!backend.Supports(row.op)) {
      // The CPU backend has every kernel (its reference table checks so); another
      // backend may lack one, and callers that have a composition run it instead
      // (nn's batch norm). Said, not hidden.
      EXPECT_FALSE(device.is_cpu()) << OpName(row.op);
      missing += std::string(missing.empty() ? "" : ", ") + OpName(row.op);
      continue;
    }
    for (DType d : row.dtypes) {
      Generator gen(static_cast<uint64_t>(row.op) * 101 + static_cast<uint64_t>(d));
      Inputs cpu = row.make(d, gen);
      std::vector<Tensor> want;
      {
        cpu::ReferenceModeGuard reference;
        want = row.run(cpu, Device::Cpu());
      }
      Inputs moved;
      for (const Tensor& t : cpu) moved.push_back(t.To(device));
      backend.ResetFallbackCounts();
      std::vector<Tensor> got = row.run(moved, device);
      backend.Synchronize(device.index);
      // bf16 is fast only where oneDNN has kernels for it (AVX-512 up; not on an
      // AVX2 Zen 3, where the reference kernels run and the values are still
      // compared below).
      bool must_be_fast = device.is_cpu() && std::find(row.cpu_fast.begin(), row.cpu_fast.end(), d) != row.cpu_fast.end() &&
                          (d != DType::kBF16 || cpu::OneDnnHasBf16Kernels());
      if (must_be_fast) {
        EXPECT_EQ(backend.FallbackCount(row.op), 0)
            << OpName(row.op) << " " << Name(d) << ": the fast path refused a case and the reference kernel ran";
      }
      ASSERT_EQ(got.size(), want.size()) << OpName(row.op);
      for (size_t i = 0; i < got.size(); ++i) {
        std::string where;
        // A floating output's dtype picks the tolerance; quantized outputs take
        // the row's steps, integer and bool outputs must be equal.
        Tol tol = row.tol.For(IsFloating(want[i].dtype()) ? want[i].dtype() : DType::kF32);
        double excess = Excess(got[i], want[i], tol, &where);
        EXPECT_LE(excess, 0) << OpName(row.op) << " on " << device.ToString() << ", " << Name(d) << " inputs, output " << i
                             << " " << want[i].Describe() << ": " << where << " (atol " << tol.atol << ", rtol "
                             << tol.rtol << ", steps " << tol.steps << ")";
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 200);
  if (!missing.empty()) std::printf("%s has no kernel for: %s\n", device.ToString().c_str(), missing.c_str());
}

TEST(Conformance, CpuFastPathsMatchReference) { RunTable(Device::Cpu()); }

TEST(Conformance, CudaMatchesReference) {
  Backend* cuda = FindBackend(DeviceType::kCuda);
  if (cuda == nullptr) GTEST_SKIP() << "built without the CUDA backend (use --config=cuda)";
  std::string why = cuda->Unavailable();
  if (!why.empty()) GTEST_SKIP() << "CUDA backend unavailable: " << why;
  cuda->SetOption("tf32", "0");
  cuda->SetOption("conv", "cudnn");
  RunTable(Device::Cuda(0));
}

}  // namespace
}  // namespace quanta

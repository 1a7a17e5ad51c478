// FP8 training as DeepSeek-V3 does it (arXiv 2412.19437 §3.3), emulated in f32:
// every GEMM of a Linear or Conv2d reads E4M3 inputs with fine-grained scales
// computed online from each group's largest magnitude — activations in 1 x 128
// tiles along the reduction dim, weights in 128 x 128 blocks, the output
// gradient (the input of both backward GEMMs) in 1 x 128 tiles — while master
// weights, optimizer state, batch norm and the products themselves stay f32
// (DeepSeek accumulates in f32 every 128 elements; f32 throughout is the limit
// of that). The stem and the classifier stay in f32, as DeepSeek keeps the
// embedding and the output head. Scales are exact f32 (Note [Block scaling]).
//
//   Fp8Report r = PrepareFp8Training(*net, Fp8Recipe{});   // before the optimizer step loop
//   std::cout << r.ToString();
//
// Emulation, not a faster path: the values are what FP8 GEMMs with f32
// accumulation read, the time is f32's plus the quantization passes. One
// simplification: the weight-gradient GEMM reduces over the batch, where
// DeepSeek re-tiles the activation and the gradient along that dim; here it
// reads the same tiles as the other two GEMMs (docs/minifloats.md).
#pragma once

#include <string>
#include <vector>

#include "core/dtype.h"
#include "nn/module.h"

namespace quanta::quant {

struct Fp8Recipe {
  DType forward = DType::kF8E4M3;   // activations and weights
  // Output gradients; kF8E5M2 for the E5M2 variant; kF32 leaves them in f32
  // (FP8 forward GEMMs only: an ablation, not DeepSeek's recipe).
  DType gradient = DType::kF8E4M3;
  int64_t tile = 128;               // activations and gradients: 1 x tile along the reduction dim
  int64_t block = 128;              // weights: block x block of (out, in * kh * kw)
  // The first and last Linear/Conv2d stay f32 (a CNN's stem and classifier;
  // a transformer keeps its output head, keep_last, while its first Linear is
  // an attention projection like the others: keep_first = false).
  bool keep_first = true, keep_last = true;
};

struct Fp8Report {
  std::vector<std::string> fp8_layers, kept_layers;
  std::string ToString() const;  // "fp8 (E4M3, gradients E4M3): 8 layers; f32: conv1, fc"
};

// Attaches the recipe's quantizers to every Linear and Conv2d of model (their
// input and weight slots and output_grad_quant, Note [Quantization slots] in
// nn/layers.h). Throws if a layer already carries quantizers (QAT and FP8
// training do not stack).
Fp8Report PrepareFp8Training(nn::Module& model, const Fp8Recipe& recipe);
// Takes them off again: the model computes in f32 (after training, to evaluate
// or convert what the master weights hold).
void RemoveFp8Training(nn::Module& model);

// The fake-quantized forms the recipe uses, for tests and other callers: x's
// dim `dim` in 1 x tile groups (zero-padded to a whole tile, as DeepSeek's
// kernels pad), and a weight's (out, rest) matrix in block x block groups.
Tensor Fp8QuantizeTiles(const Tensor& x, int64_t dim, int64_t tile, DType element);
Tensor Fp8QuantizeBlocks(const Tensor& w, int64_t block, DType element);

}  // namespace quanta::quant

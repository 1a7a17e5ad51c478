// The math of nn's layers and losses as functions, composed from core's ops (so
// autograd differentiates them for free). Layers in nn/layers.h hold parameters
// and call these.
//
//   Tensor y = Linear(x, w, b);
//   Tensor loss = CrossEntropy(logits, targets, {.label_smoothing = 0.1});
//   Tensor n = BatchNorm(x, running_mean, running_var, gamma, beta, /*training=*/true, 0.1, 1e-5);
#pragma once

#include <cstdint>
#include <vector>

#include "core/ops.h"

namespace quanta {

// x (..., in), weight (out, in), bias (out) or undefined -> (..., out).
Tensor Linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// x (N, C, H, W). In training, normalizes with the batch's statistics and updates
// the running ones (momentum, unbiased variance); otherwise uses the running ones.
// Training runs core's fused BatchNormTraining where the backend has its kernel.
// What follows batch norm in a ResNet block, y = relu(bn(x) + residual), runs in
// the same kernel when given as the epilogue (Note [Batch norm epilogue] in
// backends/cpu/reference_normalization.cc: one pass instead of up to three, and
// no ReLU threshold pass in the backward); elsewhere as Add and Relu, with the
// same result bit for bit.
struct BatchNormEpilogue {
  Tensor residual;  // added when defined (x's shape and dtype)
  bool relu = false;
};
Tensor BatchNorm(const Tensor& x, Tensor& running_mean, Tensor& running_var, const Tensor& weight,
                 const Tensor& bias, bool training, double momentum, double eps,
                 const BatchNormEpilogue& epilogue = {});
// The epilogue as ops: Relu(Add(y, residual)), the parts that are set.
Tensor ApplyEpilogue(const Tensor& y, const BatchNormEpilogue& epilogue);
// Batch norm's running statistics after a batch of `count` values a channel with
// this (mean, biased var): an exponential average with `momentum`, the
// variance made unbiased (count / (count - 1)) as PyTorch does. Both layers use
// it: the local BatchNorm above and nn::BatchNorm2d's synchronized form.
void UpdateBatchNormRunning(const Tensor& mean, const Tensor& var, double count, Tensor& running_mean,
                            Tensor& running_var, double momentum);
// The same as a composition of core ops: what backends without the fused kernel
// run, and what tests hold the fused kernel equal to.
Tensor BatchNormComposite(const Tensor& x, Tensor& running_mean, Tensor& running_var, const Tensor& weight,
                          const Tensor& bias, bool training, double momentum, double eps);

// Normalizes over the last normalized_shape.size() dims: one kernel
// (NativeLayerNorm in core/ops.h) where the backend has it.
Tensor LayerNorm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                 const Tensor& bias, double eps);
// The same as a composition of core ops: what backends without the kernel run,
// and what tests hold the kernel equal to.
Tensor LayerNormComposite(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                          const Tensor& bias, double eps);

// Zeroes each element with probability p and scales the rest by 1 / (1 - p).
Tensor Dropout(const Tensor& x, double p, bool training, Generator* gen = nullptr);

// Average pooling; padding counts as zeros in the average (count_include_pad).
Tensor AvgPool2d(const Tensor& x, const Pool2dOptions& options);
// Output (N, C, out_h, out_w); cell i covers [floor(i H / out), ceil((i + 1) H / out)).
Tensor AdaptiveAvgPool2d(const Tensor& x, int64_t out_h, int64_t out_w);

// weight (num, dim), indices integer of any shape -> (..., dim).
Tensor Embedding(const Tensor& indices, const Tensor& weight);

struct CrossEntropyOptions {
  double label_smoothing = 0;
  int64_t ignore_index = -100;
};
// logits (N, C), targets integer (N) in [0, C) or ignore_index. Mean over the
// targets not ignored.
Tensor CrossEntropy(const Tensor& logits, const Tensor& targets, const CrossEntropyOptions& options = {});
// Knowledge distillation (Hinton et al. 2015): T^2 times the batch mean of
// KL(softmax(teacher / T) || softmax(student / T)), as PyTorch writes it:
// kl_div(log_softmax(s / T), softmax(t / T), reduction="batchmean") * T * T.
// The T^2 keeps the gradient's size independent of T. Logits (N, C); the
// teacher's get no gradient.
Tensor DistillationLoss(const Tensor& student_logits, const Tensor& teacher_logits, double temperature);
Tensor MseLoss(const Tensor& prediction, const Tensor& target);
// Mean of the numerically stable max(x, 0) - x y + log(1 + exp(-|x|)).
Tensor BceWithLogits(const Tensor& logits, const Tensor& targets);

// softmax(q k^T / sqrt(d) + mask) v. q (..., T, d), k, v (..., S, d); mask
// additive (-inf where masked), broadcastable to (..., T, S), or undefined.
Tensor ScaledDotProductAttention(const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& mask = Tensor());

}  // namespace quanta

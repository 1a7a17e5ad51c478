// nn's functions, each a composition of core ops.
#include "nn/functional.h"

#include <cmath>

#include "core/backend.h"
#include "core/error.h"
#include "core/grad_mode.h"

namespace quanta {

Tensor Linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  QUANTA_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1),
               "linear: input ", x.Describe(), " does not fit weight ", weight.Describe());
  Tensor y = Matmul(x, weight.Transpose(0, 1));
  return bias.defined() ? Add(y, bias) : y;
}

namespace {

void CheckBatchNorm(const Tensor& x, const Tensor& running_mean, bool training) {
  QUANTA_CHECK(x.dim() == 4 && running_mean.numel() == x.size(1), "batch_norm: input ", x.Describe(),
               " does not fit ", running_mean.numel(), " channels");
  QUANTA_CHECK(!training || x.numel() / x.size(1) > 1,
               "batch_norm: training needs more than one value per channel, got ", x.Describe());
}

// running = (1 - momentum) running + momentum batch, with the unbiased variance.
void UpdateRunning(const Tensor& x, const Tensor& mean, const Tensor& var, Tensor& running_mean,
                   Tensor& running_var, double momentum) {
  UpdateBatchNormRunning(mean, var, static_cast<double>(x.numel() / x.size(1)), running_mean, running_var, momentum);
}

}  // namespace

void UpdateBatchNormRunning(const Tensor& mean, const Tensor& var, double count, Tensor& running_mean,
                            Tensor& running_var, double momentum) {
  NoGradGuard no_grad;
  const int64_t C = running_mean.numel();
  Tensor m = mean.Detach().View({C}).To(running_mean.dtype());
  Tensor v = Mul(var.Detach().View({C}), count / (count - 1)).To(running_var.dtype());
  running_mean.CopyFrom(Add(Mul(running_mean, 1 - momentum), Mul(m, momentum)));
  running_var.CopyFrom(Add(Mul(running_var, 1 - momentum), Mul(v, momentum)));
}

Tensor ApplyEpilogue(const Tensor& y, const BatchNormEpilogue& epilogue) {
  Tensor out = epilogue.residual.defined() ? Add(y, epilogue.residual) : y;
  return epilogue.relu ? Relu(out) : out;
}

Tensor BatchNorm(const Tensor& x, Tensor& running_mean, Tensor& running_var, const Tensor& weight,
                 const Tensor& bias, bool training, double momentum, double eps, const BatchNormEpilogue& epilogue) {
  // Note [Fused batch norm] in backends/cpu/reference_normalization.cc: training
  // runs one fused kernel where the backend has it and the parameters share x's
  // dtype (under autocast they do not: the composition promotes as before).
  const bool fused = training && x.defined() && IsFloating(x.dtype()) &&
                     GetBackend(x.device()).Supports(Op::kBatchNorm) &&
                     (!weight.defined() || weight.dtype() == x.dtype()) && (!bias.defined() || bias.dtype() == x.dtype());
  if (!fused) {
    return ApplyEpilogue(BatchNormComposite(x, running_mean, running_var, weight, bias, training, momentum, eps),
                         epilogue);
  }
  // A residual of another shape (broadcast), dtype or device is added after.
  const Tensor& r = epilogue.residual;
  const bool in_kernel = !r.defined() || (r.shape() == x.shape() && r.dtype() == x.dtype() && r.device() == x.device());
  CheckBatchNorm(x, running_mean, training);
  const Tensor w = weight.defined() ? weight : Ones({x.size(1)}, x.dtype(), x.device());
  const Tensor b = bias.defined() ? bias : Zeros({x.size(1)}, x.dtype(), x.device());
  std::array<Tensor, 3> out =
      in_kernel ? BatchNormTraining(x, w, b, eps, r, epilogue.relu) : BatchNormTraining(x, w, b, eps);
  UpdateRunning(x, out[1], out[2], running_mean, running_var, momentum);
  return in_kernel ? out[0] : ApplyEpilogue(out[0], epilogue);
}

Tensor BatchNormComposite(const Tensor& x, Tensor& running_mean, Tensor& running_var, const Tensor& weight,
                          const Tensor& bias, bool training, double momentum, double eps) {
  CheckBatchNorm(x, running_mean, training);
  Shape channel = {1, x.size(1), 1, 1};
  if (!training) {
    // Inference: y = x * scale + shift, with scale = weight / sqrt(var + eps)
    // and shift = bias - mean * scale computed on the C values first, as
    // PyTorch's CPU inference kernel does: two passes over x instead of four.
    Tensor scale = Rsqrt(Add(running_var, eps));
    if (weight.defined()) scale = Mul(scale, weight);
    Tensor shift = Neg(Mul(running_mean, scale));
    if (bias.defined()) shift = Add(shift, bias);
    return Add(Mul(x, scale.View(channel)), shift.View(channel));
  }
  Tensor mean = Mean(x, {0, 2, 3}, /*keepdim=*/true);
  Tensor var = Var(x, {0, 2, 3}, /*keepdim=*/true, /*correction=*/0);
  UpdateRunning(x, mean, var, running_mean, running_var, momentum);
  Tensor y = Mul(Sub(x, mean), Rsqrt(Add(var, eps)));
  if (weight.defined()) y = Mul(y, weight.View(channel));
  if (bias.defined()) y = Add(y, bias.View(channel));
  return y;
}

Tensor LayerNorm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                 const Tensor& bias, double eps) {
  int k = static_cast<int>(normalized_shape.size());
  QUANTA_CHECK(k >= 1 && x.dim() >= k &&
                   Shape(x.shape().end() - k, x.shape().end()) == normalized_shape,
               "layer_norm: input ", x.Describe(), " does not end in ", ShapeToString(normalized_shape));
  // One kernel where the backend has it (Note [Fused layer norm] in
  // backends/cpu/reference_normalization.cc), with weight and bias of x's dtype
  // and the normalized shape (under autocast the dtypes may differ, and
  // broadcast parameters may be given: the composition takes those).
  auto fits = [&](const Tensor& t) { return !t.defined() || (t.dtype() == x.dtype() && t.shape() == normalized_shape); };
  if (IsFloating(x.dtype()) && GetBackend(x.device()).Supports(Op::kLayerNorm) && fits(weight) && fits(bias)) {
    const Tensor w = weight.defined() ? weight : Ones(normalized_shape, x.dtype(), x.device());
    const Tensor b = bias.defined() ? bias : Zeros(normalized_shape, x.dtype(), x.device());
    return NativeLayerNorm(x, w, b, eps)[0];
  }
  return LayerNormComposite(x, normalized_shape, weight, bias, eps);
}

Tensor LayerNormComposite(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                          double eps) {
  int k = static_cast<int>(normalized_shape.size());
  std::vector<int64_t> dims;
  for (int d = x.dim() - k; d < x.dim(); ++d) dims.push_back(d);
  // The centered input is computed once and serves the variance and the output:
  // six passes over x where Var(x) would take nine.
  Tensor centered = Sub(x, Mean(x, dims, true));
  Tensor var = Mean(Mul(centered, centered), dims, true);
  Tensor y = Mul(centered, Rsqrt(Add(var, eps)));
  if (weight.defined()) y = Mul(y, weight);
  if (bias.defined()) y = Add(y, bias);
  return y;
}

Tensor Dropout(const Tensor& x, double p, bool training, Generator* gen) {
  QUANTA_CHECK(p >= 0 && p < 1, "dropout: probability ", p, " outside [0, 1)");
  if (!training || p == 0) return x;
  Tensor keep = Bernoulli(x.shape(), 1 - p, gen, x.dtype(), x.device());
  return Mul(x, Mul(keep, 1.0 / (1 - p)));
}

Tensor AvgPool2d(const Tensor& x, const Pool2dOptions& o) {
  QUANTA_CHECK(x.dim() == 4, "avg_pool2d: input must be (N, C, H, W), got ", x.Describe());
  int64_t C = x.size(1);
  // A depthwise convolution with constant weights 1 / (KH KW): autograd for free.
  Tensor w = Full({C, 1, o.kernel[0], o.kernel[1]}, 1.0 / (o.kernel[0] * o.kernel[1]), x.dtype(), x.device());
  Conv2dOptions c;
  for (int i = 0; i < 2; ++i) {
    c.stride[i] = o.stride[i] > 0 ? o.stride[i] : o.kernel[i];
    c.padding[i] = o.padding[i];
    c.dilation[i] = o.dilation[i];
  }
  c.groups = C;
  return Conv2d(x, w, Tensor(), c);
}

Tensor AdaptiveAvgPool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  QUANTA_CHECK(x.dim() == 4 && out_h >= 1 && out_w >= 1, "adaptive_avg_pool2d: bad input ", x.Describe(),
               " or output ", out_h, "x", out_w);
  int64_t H = x.size(2), W = x.size(3);
  if (out_h == 1 && out_w == 1) return Mean(x, {2, 3}, /*keepdim=*/true);
  if (H % out_h == 0 && W % out_w == 0) {
    Pool2dOptions o;
    o.kernel[0] = o.stride[0] = H / out_h;
    o.kernel[1] = o.stride[1] = W / out_w;
    return AvgPool2d(x, o);
  }
  std::vector<Tensor> rows;
  for (int64_t i = 0; i < out_h; ++i) {
    int64_t h0 = i * H / out_h, h1 = ((i + 1) * H + out_h - 1) / out_h;
    std::vector<Tensor> cells;
    for (int64_t j = 0; j < out_w; ++j) {
      int64_t w0 = j * W / out_w, w1 = ((j + 1) * W + out_w - 1) / out_w;
      cells.push_back(Mean(x.Narrow(2, h0, h1 - h0).Narrow(3, w0, w1 - w0), {2, 3}, true));
    }
    rows.push_back(Concat(cells, 3));
  }
  return Concat(rows, 2);
}

Tensor Embedding(const Tensor& indices, const Tensor& weight) {
  QUANTA_CHECK(weight.dim() == 2 && IsIntegral(indices.dtype()), "embedding: needs integer indices and a (num, dim) weight, got ",
               indices.Describe(), ", ", weight.Describe());
  Shape shape = indices.shape();
  shape.push_back(weight.size(1));
  return IndexSelect(weight, 0, indices.Reshape({indices.numel()})).View(shape);
}

Tensor CrossEntropy(const Tensor& logits, const Tensor& targets, const CrossEntropyOptions& o) {
  QUANTA_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0) &&
                   IsIntegral(targets.dtype()),
               "cross_entropy: needs logits (N, C) and integer targets (N), got ", logits.Describe(), ", ",
               targets.Describe());
  QUANTA_CHECK(o.label_smoothing >= 0 && o.label_smoothing <= 1, "cross_entropy: label_smoothing ",
               o.label_smoothing, " outside [0, 1]");
  int64_t C = logits.size(1);
  Tensor t = targets.To(DType::kI64);
  Tensor valid = Ne(t, static_cast<double>(o.ignore_index));
  {
    Tensor bad = Mul(valid.To(DType::kI64), Add(Lt(t, 0).To(DType::kI64), Ge(t, static_cast<double>(C)).To(DType::kI64)));
    QUANTA_CHECK(Sum(bad).item<int64_t>() == 0, "cross_entropy: a target is outside [0, ", C,
                 ") and is not ignore_index ", o.ignore_index);
  }
  Tensor safe = Where(valid, t, Zeros({1}, DType::kI64));
  Tensor logp = LogSoftmax(logits, 1);
  Tensor nll = Neg(Gather(logp, 1, safe.Unsqueeze(1)).Squeeze(1));
  Tensor per = nll;
  if (o.label_smoothing > 0) {
    Tensor smooth = Neg(Mean(logp, {1}));
    per = Add(Mul(nll, 1 - o.label_smoothing), Mul(smooth, o.label_smoothing));
  }
  Tensor mask = valid.To(logits.dtype());
  return Div(Sum(Mul(per, mask)), Maximum(Sum(mask), Scalar(1, logits.dtype(), logits.device())));
}

Tensor DistillationLoss(const Tensor& student_logits, const Tensor& teacher_logits, double temperature) {
  QUANTA_CHECK(student_logits.dim() == 2 && student_logits.shape() == teacher_logits.shape(),
               "distillation_loss: needs student and teacher logits of one shape (N, C), got ",
               student_logits.Describe(), ", ", teacher_logits.Describe());
  QUANTA_CHECK(temperature > 0, "distillation_loss: temperature ", temperature, " must be positive");
  Tensor log_student = LogSoftmax(Div(student_logits, temperature), 1);
  Tensor log_teacher = LogSoftmax(Div(teacher_logits.Detach().To(student_logits.dtype()), temperature), 1);
  Tensor kl = Sum(Mul(Exp(log_teacher), Sub(log_teacher, log_student)));
  return Mul(kl, temperature * temperature / static_cast<double>(student_logits.size(0)));
}

Tensor MseLoss(const Tensor& prediction, const Tensor& target) {
  QUANTA_CHECK(prediction.shape() == target.shape(), "mse_loss: shapes differ (", prediction.Describe(), ", ",
               target.Describe(), ")");
  return Mean(Square(Sub(prediction, target)));
}

Tensor BceWithLogits(const Tensor& logits, const Tensor& targets) {
  QUANTA_CHECK(logits.shape() == targets.shape(), "bce_with_logits: shapes differ (", logits.Describe(), ", ",
               targets.Describe(), ")");
  Tensor y = targets.To(logits.dtype());
  Tensor softplus_neg_abs = Log(Add(Exp(Neg(Abs(logits))), 1.0));
  return Mean(Add(Sub(Relu(logits), Mul(logits, y)), softplus_neg_abs));
}

Tensor ScaledDotProductAttention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask) {
  QUANTA_CHECK(q.dim() >= 2 && q.size(-1) == k.size(-1) && k.size(-2) == v.size(-2),
               "attention: q ", q.Describe(), ", k ", k.Describe(), ", v ", v.Describe(), " do not fit");
  Tensor scores = Mul(Matmul(q, k.Transpose(-2, -1)), 1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  if (mask.defined()) scores = Add(scores, mask.To(scores.dtype()));
  return Matmul(Softmax(scores, -1), v);
}

}  // namespace quanta

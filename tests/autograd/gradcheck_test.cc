// A gradcheck (central differences in f64) for every differentiable op of
// core/ops.def and the composites built from them, broadcasting included.
#include <functional>
#include <string>

#include "autograd/autograd.h"
#include "core/ops.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

// A new op needs its gradcheck row here (or a note why it has no gradient).
static_assert(kNumOps == 63, "add a gradcheck row for the new op, then update this count");

Generator& Gen() {
  static Generator gen(77);
  return gen;
}
Tensor Leaf(const Tensor& t) { return t.Contiguous().Detach().SetRequiresGrad(); }
Tensor Randn(const Shape& s) { return Leaf(Normal(s, 0, 1, &Gen(), DType::kF64)); }
Tensor Positive(const Shape& s) { return Leaf(Uniform(s, 0.5, 2.0, &Gen(), DType::kF64)); }
// Values at least 0.2 away from 0 (abs, relu kinks).
Tensor AwayFromZero(const Shape& s) {
  Tensor u = Uniform(s, 0.2, 1.5, &Gen(), DType::kF64);
  Tensor sign = Sub(Mul(Bernoulli(s, 0.5, &Gen(), DType::kF64), 2.0), 1.0);
  return Leaf(Mul(u, sign));
}
// A permutation of distinct values spread by 0.1 (max, min, max pooling).
Tensor Distinct(const Shape& s) {
  int64_t n = NumElements(s);
  Tensor keys = Uniform({n}, 0, 1, &Gen(), DType::kF64);
  // rank of each key, via argmax over a comparison matrix count.
  Tensor rank = Sum(Lt(keys.Unsqueeze(0), keys.Unsqueeze(1)).To(DType::kF64), {1});
  return Leaf(Mul(rank, 0.1).View(s));
}
Tensor I64(const std::vector<int64_t>& v, const Shape& s) { return Tensor::FromVector<int64_t>(v, s); }

struct Row {
  std::string name;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  std::vector<Tensor> inputs;
};

std::vector<Row> Rows() {
  using V = const std::vector<Tensor>&;
  Conv2dOptions strided;
  strided.stride[0] = 2;
  strided.stride[1] = 1;
  strided.padding[0] = strided.padding[1] = 1;
  Conv2dOptions dilated_groups;
  dilated_groups.dilation[0] = dilated_groups.dilation[1] = 2;
  dilated_groups.groups = 2;
  dilated_groups.padding[0] = 1;
  Pool2dOptions pool;
  pool.kernel[0] = pool.kernel[1] = 3;
  pool.stride[0] = pool.stride[1] = 2;
  pool.padding[0] = pool.padding[1] = 1;
  Tensor cond = Gt(Normal({2, 3}, 0, 1, &Gen()), 0);
  return {
      // unary
      {"neg", [](V x) { return Neg(x[0]); }, {Randn({2, 3})}},
      {"exp", [](V x) { return Exp(x[0]); }, {Randn({2, 3})}},
      {"log", [](V x) { return Log(x[0]); }, {Positive({2, 3})}},
      {"sqrt", [](V x) { return Sqrt(x[0]); }, {Positive({2, 3})}},
      {"rsqrt", [](V x) { return Rsqrt(x[0]); }, {Positive({2, 3})}},
      {"abs", [](V x) { return Abs(x[0]); }, {AwayFromZero({2, 3})}},
      {"relu", [](V x) { return Relu(x[0]); }, {AwayFromZero({2, 3})}},
      {"sigmoid", [](V x) { return Sigmoid(x[0]); }, {Randn({2, 3})}},
      {"tanh", [](V x) { return Tanh(x[0]); }, {Randn({2, 3})}},
      {"erf", [](V x) { return Erf(x[0]); }, {Randn({2, 3})}},
      {"round (zero almost everywhere)", [](V x) { return Round(Mul(x[0], 3.3)); }, {Randn({2, 3})}},
      {"gelu", [](V x) { return Gelu(x[0]); }, {Randn({2, 3})}},
      // binary, with broadcasting
      {"add broadcast", [](V x) { return Add(x[0], x[1]); }, {Randn({2, 3}), Randn({3})}},
      {"sub broadcast both", [](V x) { return Sub(x[0], x[1]); }, {Randn({2, 1, 3}), Randn({4, 1})}},
      {"mul broadcast", [](V x) { return Mul(x[0], x[1]); }, {Randn({2, 3}), Randn({2, 1})}},
      {"mul scalar", [](V x) { return Mul(x[0], 3.0); }, {Randn({4})}},
      {"div", [](V x) { return Div(x[0], x[1]); }, {Randn({2, 3}), AwayFromZero({2, 3})}},
      {"pow", [](V x) { return Pow(x[0], x[1]); }, {Positive({2, 3}), Randn({2, 3})}},
      {"maximum", [](V x) { return Maximum(x[0], x[1]); }, {Distinct({2, 3}), Leaf(Add(Distinct({2, 3}), 0.05))}},
      {"minimum", [](V x) { return Minimum(x[0], x[1]); }, {Distinct({2, 3}), Leaf(Add(Distinct({2, 3}), 0.05))}},
      {"threshold_backward (linear in the gradient)", [](V x) { return ThresholdBackward(x[0], x[1]); },
       {Randn({2, 3}), AwayFromZero({2, 3})}},
      {"where", [cond](V x) { return Where(cond, x[0], x[1]); }, {Randn({2, 3}), Randn({3})}},
      {"clamp", [](V x) { return Clamp(x[0], -0.5, 0.5); }, {Leaf(Mul(AwayFromZero({3, 3}), 0.3))}},
      {"copy (contiguous of a transpose)", [](V x) { return x[0].Transpose(0, 1).Contiguous(); }, {Randn({2, 3})}},
      // reductions and their composites
      {"sum dims", [](V x) { return Sum(x[0], {0, 2}); }, {Randn({2, 3, 4})}},
      {"sum all", [](V x) { return Sum(x[0]); }, {Randn({2, 3})}},
      {"mean keepdim", [](V x) { return Mean(x[0], {1}, true); }, {Randn({2, 3, 4})}},
      {"max", [](V x) { return Max(x[0], {1}); }, {Distinct({3, 4})}},
      {"min", [](V x) { return Min(x[0], {0, 1}); }, {Distinct({3, 4})}},
      {"var", [](V x) { return Var(x[0], {1}); }, {Randn({3, 5})}},
      {"softmax", [](V x) { return Softmax(x[0], 1); }, {Randn({3, 5})}},
      {"log_softmax", [](V x) { return LogSoftmax(x[0], -1); }, {Randn({3, 5})}},
      // linear algebra, convolution, pooling
      {"matmul batched broadcast", [](V x) { return Matmul(x[0], x[1]); }, {Randn({2, 1, 3, 4}), Randn({3, 4, 5})}},
      {"matmul vector", [](V x) { return Matmul(x[0], x[1]); }, {Randn({4}), Randn({4, 3})}},
      {"conv2d", [](V x) { return Conv2d(x[0], x[1], x[2]); }, {Randn({2, 2, 5, 5}), Randn({3, 2, 3, 3}), Randn({3})}},
      {"conv2d stride padding", [strided](V x) { return Conv2d(x[0], x[1], Tensor(), strided); },
       {Randn({1, 2, 6, 5}), Randn({2, 2, 3, 2})}},
      {"conv2d dilation groups", [dilated_groups](V x) { return Conv2d(x[0], x[1], x[2], dilated_groups); },
       {Randn({1, 4, 7, 7}), Randn({4, 2, 3, 3}), Randn({4})}},
      {"max_pool2d", [pool](V x) { return MaxPool2d(x[0], pool); }, {Distinct({1, 2, 5, 5})}},
      // batch norm (fused): y, and the statistics' own outputs mixed in so that
      // their gradients (1 / n and 2 (x - mean) / n) are checked too.
      {"batch_norm", [](V x) {
         std::array<Tensor, 3> o = BatchNormTraining(x[0], x[1], x[2], 1e-3);
         return Add(o[0], Mul(Add(o[1], Square(o[2])).View({1, 3, 1, 1}), 0.3));
       },
       {Randn({2, 3, 2, 3}), Randn({3}), Randn({3})}},
      // layer norm (fused) over the last two dims, the statistics mixed in as above
      {"layer_norm", [](V x) {
         std::array<Tensor, 3> o = NativeLayerNorm(x[0], x[1], x[2], 1e-3);
         return Add(o[0], Mul(Add(o[1], Square(o[2])), 0.3));
       },
       {Randn({2, 3, 2, 4}), Randn({2, 4}), Randn({2, 4})}},
      {"softmax inner dim", [](V x) { return Softmax(x[0], 1); }, {Randn({2, 3, 4})}},
      // indexing
      {"index_select", [](V x) { return IndexSelect(x[0], 1, I64({2, 0, 2}, {3})); }, {Randn({2, 3})}},
      {"index_add", [](V x) { return IndexAdd({4, 2}, 0, I64({1, 3, 1}, {3}), x[0]); }, {Randn({3, 2})}},
      {"gather", [](V x) { return Gather(x[0], 1, I64({0, 2, 2, 1}, {2, 2})); }, {Randn({2, 3})}},
      {"scatter_add", [](V x) { return ScatterAdd({2, 3}, 1, I64({0, 2, 2, 2}, {2, 2}), x[0]); }, {Randn({2, 2})}},
      // structural
      {"view", [](V x) { return Mul(x[0].View({3, 2}), x[0].Reshape({3, 2})); }, {Randn({2, 3})}},
      {"permute", [](V x) { return x[0].Permute({2, 0, 1}); }, {Randn({2, 3, 4})}},
      {"expand", [](V x) { return x[0].Expand({2, 3, 4}); }, {Randn({3, 1})}},
      {"slice step", [](V x) { return x[0].Slice(1, 1, 6, 2); }, {Randn({2, 6})}},
      {"narrow", [](V x) { return x[0].Narrow(0, 1, 2); }, {Randn({4, 2})}},
      {"select", [](V x) { return x[0].Select(1, 2); }, {Randn({2, 3})}},
      {"squeeze unsqueeze flatten", [](V x) { return x[0].Unsqueeze(0).Squeeze().Flatten(); }, {Randn({2, 3})}},
      {"concat", [](V x) { return Concat({x[0], x[1]}, 1); }, {Randn({2, 1}), Randn({2, 3})}},
      {"stack", [](V x) { return Stack({x[0], x[1]}, 0); }, {Randn({2, 3}), Randn({2, 3})}},
  };
}

TEST(GradCheck, EveryDifferentiableOp) {
  for (const Row& row : Rows()) {
    SCOPED_TRACE(row.name);
    GradCheckResult r = GradCheck(row.fn, row.inputs);
    EXPECT_TRUE(r.ok) << row.name << ": " << r.report;
    EXPECT_LT(r.max_abs_error, 1e-5) << row.name;
  }
}

TEST(GradCheck, CatchesAWrongGradient) {
  // A hook that doubles the gradient must make gradcheck fail.
  Tensor x = Randn({3});
  GradCheckResult r = GradCheck(
      [](const std::vector<Tensor>& in) {
        Tensor y = Exp(in[0]);
        if (y.requires_grad()) RegisterHook(y, [](const Tensor& g) { return Mul(g, 2.0); });
        return y;
      },
      {x});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.report.find("element 0"), std::string::npos) << r.report;
}

TEST(GradCheck, NonDifferentiableOpsAreDeclaredSo) {
  for (Op op : {Op::kEq, Op::kArgmax, Op::kQuantize, Op::kDequantize, Op::kFakeQuantizeBackward, Op::kBlockQuantize,
                Op::kBlockDequantize, Op::kQuantizedMatmul, Op::kQuantizedConv2d, Op::kFill, Op::kArange, Op::kUniform, Op::kNormal,
                Op::kBernoulli, Op::kConv2dBackwardInput, Op::kConv2dBackwardWeight, Op::kMaxPool2dBackward, Op::kBatchNormBackward}) {
    EXPECT_FALSE(internal::IsDifferentiable(op)) << OpName(op);
  }
  for (int i = 0; i < kNumOps; ++i) {
    Op op = static_cast<Op>(i);
    bool expected_none = op == Op::kEq || op == Op::kNe || op == Op::kLt || op == Op::kLe ||
                         op == Op::kGt || op == Op::kGe || op == Op::kArgmax || op == Op::kFill ||
                         op == Op::kArange || op == Op::kUniform || op == Op::kNormal ||
                         op == Op::kBernoulli || op == Op::kConv2dBackwardInput ||
                         op == Op::kConv2dBackwardWeight || op == Op::kMaxPool2dBackward || op == Op::kBatchNormBackward ||
                         op == Op::kQuantize || op == Op::kDequantize || op == Op::kFakeQuantizeBackward ||
                         op == Op::kBlockQuantize || op == Op::kBlockDequantize ||
                         op == Op::kQuantizedMatmul || op == Op::kQuantizedConv2d;
    EXPECT_EQ(internal::IsDifferentiable(op), !expected_none) << OpName(op);
  }
}

}  // namespace
}  // namespace quanta

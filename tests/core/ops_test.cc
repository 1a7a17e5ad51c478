// Every op of core/ops.def against reference values: hand-computed, or the
// committed fixture testdata/unary.txt (tools/gen_core_fixtures.py, numpy f64).
// Tolerance: |got - want| <= atol + rtol * |want|, per dtype, beside each case.
#include "core/ops.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "backends/cpu/cpu_backend.h"
#include "core/backend.h"
#include "core/grad_mode.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

// A new op in core/ops.def needs its test here (block_quantize and
// block_dequantize: block_quant_test.cc); then bump this.
static_assert(kNumOps == 63, "add a test for the new op, then update this count");

void ExpectClose(const Tensor& got, const std::vector<double>& want, double atol, double rtol) {
  std::vector<double> g = got.ToVector<double>();
  ASSERT_EQ(g.size(), want.size()) << got.Describe();
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(g[i])) << "index " << i;
      continue;
    }
    EXPECT_LE(std::abs(g[i] - want[i]), atol + rtol * std::abs(want[i]))
        << "index " << i << ": got " << g[i] << ", want " << want[i] << " (" << got.Describe() << ")";
  }
}

Tensor F(const std::vector<float>& v, const Shape& shape) { return Tensor::FromVector<float>(v, shape); }
Tensor Iota(const Shape& shape, DType dtype = DType::kF32) {
  return Arange(0, static_cast<double>(NumElements(shape)), 1, dtype).View(shape);
}

// ---- elementwise --------------------------------------------------------------

struct UnaryRow {
  Tensor (*fn)(const Tensor&);
  Tensor& (*inplace)(Tensor&);
};
const std::map<std::string, UnaryRow>& UnaryOps() {
#define QUANTA_ROW(Name, str) {str, {&Name, &Name##Inplace}},
  static const auto* ops = new std::map<std::string, UnaryRow>{QUANTA_UNARY_OPS(QUANTA_ROW)};
#undef QUANTA_ROW
  return *ops;
}

TEST(Ops, UnaryAgainstFixture) {
  std::ifstream in("tests/core/testdata/unary.txt");
  ASSERT_TRUE(in) << "missing tests/core/testdata/unary.txt";
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    std::string op;
    double x, y;
    ss >> op >> x >> y;
    cases[op].first.push_back(x);
    cases[op].second.push_back(y);
  }
  ASSERT_EQ(cases.size(), UnaryOps().size()) << "fixture and op table disagree";
  for (const auto& [name, xy] : cases) {
    SCOPED_TRACE(name);
    const auto& [xs, ys] = xy;
    Shape shape = {static_cast<int64_t>(xs.size())};
    Tensor x64 = Tensor::FromVector<double>(xs, shape);
    auto fn = UnaryOps().at(name).fn;
    ExpectClose(fn(x64), ys, 1e-12, 1e-12);
    ExpectClose(fn(x64.To(DType::kF32)), ys, 1e-6, 1e-6);
    // f16/bf16 compute in f32 and round the input and the output.
    ExpectClose(fn(x64.To(DType::kBF16)), ys, 2e-2, 2e-2);
    ExpectClose(fn(x64.To(DType::kF16)), ys, 2e-3, 2e-3);
    // In place on a strided view gives the same values.
    Tensor base = Zeros({static_cast<int64_t>(xs.size()), 2}, DType::kF64);
    Tensor col = base.Select(1, 1);
    col.CopyFrom(x64);
    UnaryOps().at(name).inplace(col);
    ExpectClose(base.Select(1, 1), ys, 1e-12, 1e-12);
    ExpectClose(base.Select(1, 0), std::vector<double>(xs.size(), 0.0), 0, 0);
  }
  Tensor t = F({-1, 2}, {2});
  ExpInplace(t);
  ExpectClose(t, {std::exp(-1.0), std::exp(2.0)}, 1e-6, 1e-6);
  Tensor r = F({-1, 2}, {2});
  ReluInplace(r);
  ExpectClose(r, {0, 2}, 0, 0);
  // Integers promote to f32 for floating math and stay integers for neg/abs/relu.
  Tensor i = Tensor::FromVector<int32_t>({-4, 9}, {2});
  EXPECT_EQ(Sqrt(Abs(i)).dtype(), DType::kF32);
  ExpectClose(Sqrt(Abs(i)), {2, 3}, 0, 0);
  EXPECT_EQ(Relu(i).ToVector<int32_t>(), (std::vector<int32_t>{0, 9}));
  EXPECT_TRUE(std::isnan(Relu(F({NAN}, {1})).item<float>()));
}

TEST(Ops, BinaryHandValues) {
  Tensor a = F({1, -2, 3, 4}, {2, 2});
  Tensor b = F({2, 4, -1, 0.5f}, {2, 2});
  ExpectClose(Add(a, b), {3, 2, 2, 4.5}, 0, 0);
  ExpectClose(Sub(a, b), {-1, -6, 4, 3.5}, 0, 0);
  ExpectClose(Mul(a, b), {2, -8, -3, 2}, 0, 0);
  ExpectClose(Div(a, b), {0.5, -0.5, -3, 8}, 0, 0);
  ExpectClose(Pow(F({2, 9, 4}, {3}), F({3, 0.5f, -1}, {3})), {8, 3, 0.25}, 1e-6, 1e-6);
  ExpectClose(Maximum(a, b), {2, 4, 3, 4}, 0, 0);
  ExpectClose(Minimum(a, b), {1, -2, -1, 0.5}, 0, 0);
  ExpectClose(Maximum(F({NAN, 1}, {2}), F({0, NAN}, {2})), {NAN, NAN}, 0, 0);
  // ReLU's backward: a where b > 0; b = 0 and NaN pass nothing.
  ExpectClose(ThresholdBackward(F({1, -2, 3, 4, 5}, {5}), F({2, 4, -1, 0, NAN}, {5})), {1, -2, 0, 0, 0}, 0, 0);
  ExpectClose(a + b * a - b / b, {2, -11, -1, 5}, 0, 0);
  ExpectClose(-a, {-1, 2, -3, -4}, 0, 0);
  ExpectClose(Add(a, 10), {11, 8, 13, 14}, 0, 0);
  // Integer division gives f32, as torch.div.
  Tensor i = Tensor::FromVector<int64_t>({7, -7}, {2});
  EXPECT_EQ(Div(i, Tensor::FromVector<int64_t>({2, 2}, {2})).dtype(), DType::kF32);
  ExpectClose(Div(i, Tensor::FromVector<int64_t>({2, 2}, {2})), {3.5, -3.5}, 0, 0);
  EXPECT_EQ(Mul(i, 3).ToVector<int64_t>(), (std::vector<int64_t>{21, -21}));
  EXPECT_EQ(Mul(i, 0.5).dtype(), DType::kF32);
  EXPECT_EQ(Add(i, F({0.5f, 0.5f}, {2})).dtype(), DType::kF32);
  // f16 and bf16 arithmetic rounds once per op.
  Tensor h = F({1, 2048}, {2}).To(DType::kF16);
  ExpectClose(Add(h, F({1, 1}, {2}).To(DType::kF16)), {2, 2048}, 0, 0);  // 2049 is not an f16
}

TEST(Ops, BroadcastingEdgeCases) {
  Tensor col = F({1, 2, 3}, {3, 1});
  Tensor row = F({10, 20, 30, 40}, {4});
  Tensor sum = Add(col, row);
  EXPECT_EQ(sum.shape(), (Shape{3, 4}));
  ExpectClose(sum, {11, 21, 31, 41, 12, 22, 32, 42, 13, 23, 33, 43}, 0, 0);
  // 0-d with anything.
  ExpectClose(Mul(Scalar(2), col), {2, 4, 6}, 0, 0);
  EXPECT_EQ(Mul(Scalar(2), Scalar(3)).dim(), 0);
  // Leading dims are added; 1s stretch on both sides.
  Tensor a = Iota({2, 1, 3});
  Tensor b = Iota({4, 1});
  Tensor c = Sub(a, b);
  EXPECT_EQ(c.shape(), (Shape{2, 4, 3}));
  EXPECT_EQ(c.ToVector<float>()[1 * 12 + 2 * 3 + 1], 4 - 2);  // a[1][0][1] - b[2][0]
  // Empty dims broadcast to empty.
  Tensor e = Add(Zeros({0, 3}), F({1, 2, 3}, {3}));
  EXPECT_EQ(e.shape(), (Shape{0, 3}));
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(Add(Zeros({2, 1}), Zeros({1, 0})).shape(), (Shape{2, 0}));
  // Broadcasting reads non-contiguous, expanded inputs.
  Tensor t = Iota({3, 2}).Transpose(0, 1);  // (2, 3): [[0, 2, 4], [1, 3, 5]]
  ExpectClose(Add(t, F({100, 200, 300}, {3})), {100, 202, 304, 101, 203, 305}, 0, 0);
  // In place: a += b broadcasts b into a.
  Tensor acc = Zeros({2, 3});
  acc += F({1, 2, 3}, {3});
  acc *= F({2, 3}, {2, 1});
  ExpectClose(acc, {2, 4, 6, 3, 6, 9}, 0, 0);
  AddInplace(acc, Scalar(1));
  ExpectClose(acc, {3, 5, 7, 4, 7, 10}, 0, 0);
  SubInplace(acc, Scalar(1));
  DivInplace(acc, Scalar(2));
  ExpectClose(acc, {1, 2, 3, 1.5, 3, 4.5}, 0, 0);
  PowInplace(acc, Scalar(2));
  MaximumInplace(acc, Scalar(4));
  MinimumInplace(acc, Scalar(9));
  ExpectClose(acc, {4, 4, 9, 4, 9, 9}, 0, 0);
}

TEST(Ops, Comparisons) {
  Tensor a = F({1, 2, 3}, {3});
  Tensor b = F({2, 2, 2}, {3});
  EXPECT_EQ(Eq(a, b).dtype(), DType::kBool);
  EXPECT_EQ(Eq(a, b).ToVector<bool>(), (std::vector<bool>{false, true, false}));
  EXPECT_EQ(Ne(a, b).ToVector<bool>(), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(Lt(a, b).ToVector<bool>(), (std::vector<bool>{true, false, false}));
  EXPECT_EQ(Le(a, b).ToVector<bool>(), (std::vector<bool>{true, true, false}));
  EXPECT_EQ(Gt(a, 2).ToVector<bool>(), (std::vector<bool>{false, false, true}));
  EXPECT_EQ(Ge(a, 2).ToVector<bool>(), (std::vector<bool>{false, true, true}));
  EXPECT_EQ(Lt(Tensor::FromVector<int32_t>({1}, {1}), F({1.5f}, {1})).ToVector<bool>()[0], true);
}

TEST(Ops, WhereAndClamp) {
  Tensor cond = Tensor::FromVector<bool>({true, false, true}, {3});
  ExpectClose(Where(cond, F({1, 2, 3}, {3}), Scalar(-1)), {1, -1, 3}, 0, 0);
  Tensor m = Where(Gt(Iota({2, 1}), 0.5), Iota({1, 3}), Zeros({1}));
  EXPECT_EQ(m.shape(), (Shape{2, 3}));
  ExpectClose(m, {0, 0, 0, 0, 1, 2}, 0, 0);
  Tensor x = F({-2, 0.5f, 3}, {3});
  ExpectClose(Clamp(x, -1, 1), {-1, 0.5, 1}, 0, 0);
  ExpectClose(Clamp(x, std::nullopt, 0), {-2, 0, 0}, 0, 0);
  ClampInplace(x, 0, std::nullopt);
  ExpectClose(x, {0, 0.5, 3}, 0, 0);
}

// ---- reductions -------------------------------------------------------------------

TEST(Ops, Reductions) {
  Tensor x = Iota({2, 3, 4});  // x[i][j][k] = 12i + 4j + k
  ExpectClose(Sum(x), {276}, 0, 0);
  EXPECT_EQ(Sum(x).dim(), 0);
  ExpectClose(Sum(x, {0}), {12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34}, 0, 0);
  ExpectClose(Sum(x, {0, 2}), {60, 92, 124}, 0, 0);
  EXPECT_EQ(Sum(x, {0, 2}, true).shape(), (Shape{1, 3, 1}));
  EXPECT_EQ(Sum(x, {-1}).shape(), (Shape{2, 3}));
  ExpectClose(Mean(x, {1}), {4, 5, 6, 7, 16, 17, 18, 19}, 1e-6, 0);
  ExpectClose(Max(x, {2}), {3, 7, 11, 15, 19, 23}, 0, 0);
  ExpectClose(Min(x, {0, 1}), {0, 1, 2, 3}, 0, 0);
  // var over the last dim of [0, 1, 2, 3] + c is 5/3 (Bessel) or 1.25 (population).
  ExpectClose(Var(x, {2}), std::vector<double>(6, 5.0 / 3), 1e-6, 0);
  ExpectClose(Var(x, {2}, false, 0), std::vector<double>(6, 1.25), 1e-6, 0);
  Tensor y = F({3, 9, 9, -1, 5, 2}, {2, 3});
  EXPECT_EQ(Argmax(y, 1).ToVector<int64_t>(), (std::vector<int64_t>{1, 1}));  // first maximum
  EXPECT_EQ(Argmax(y, 0).ToVector<int64_t>(), (std::vector<int64_t>{0, 0, 0}));
  EXPECT_EQ(Argmax(y, 1, true).shape(), (Shape{2, 1}));
  // Non-contiguous input.
  ExpectClose(Sum(x.Transpose(0, 2), {2}), {12, 20, 28, 14, 22, 30, 16, 24, 32, 18, 26, 34}, 0, 0);
  // Integer sums give i64; NaN propagates through max.
  EXPECT_EQ(Sum(Tensor::FromVector<int32_t>({1, 2}, {2})).dtype(), DType::kI64);
  EXPECT_EQ(Sum(Tensor::FromVector<bool>({true, true, false}, {3})).item<int64_t>(), 2);
  EXPECT_TRUE(std::isnan(Max(F({1, NAN, 3}, {3})).item<float>()));
  // Sum of an empty dim is 0; bf16 sums accumulate wider than bf16.
  ExpectClose(Sum(Zeros({0, 3}), {0}), {0, 0, 0}, 0, 0);
  ExpectClose(Sum(Ones({1000}, DType::kBF16)), {1000}, 0, 0);
}

// The CPU kernels' dense and broadcast runs (Note [Dense runs], [Dense
// reductions]) against their strided loops: the same values computed on
// transposed (non-dense) copies of the operands.
TEST(Ops, DenseRunsEqualTheStridedLoops) {
  Generator gen(21);
  Tensor a = Normal({37, 50}, 0, 2, &gen), col = Normal({37, 1}, 0, 2, &gen), row = Normal({1, 50}, 0, 2, &gen);
  auto strided = [](const Tensor& t) { return t.Transpose(0, 1).Contiguous().Transpose(0, 1); };  // same values, column-major
  ASSERT_FALSE(strided(a).is_contiguous());
  auto same = [](const Tensor& got, const Tensor& want, double atol, double rtol) {
    std::vector<float> g = got.To(DType::kF32).ToVector<float>(), w = want.To(DType::kF32).ToVector<float>();
    ASSERT_EQ(g.size(), w.size());
    for (size_t i = 0; i < g.size(); ++i) {
      if (std::isnan(w[i])) {
        EXPECT_TRUE(std::isnan(g[i])) << i;
      } else {
        EXPECT_LE(std::abs(g[i] - w[i]), atol + rtol * std::abs(w[i])) << i << ": " << g[i] << " vs " << w[i];
      }
    }
  };
  for (const Tensor& b : {col, row, Normal({37, 50}, 0, 2, &gen)}) {  // broadcast along the run, across runs, none
    Tensor sb = b.shape() == a.shape() ? strided(b) : b;
    same(Sub(a, b), Sub(strided(a), sb), 0, 0);
    same(Div(b, a), Div(sb, strided(a)), 0, 0);
    same(Gt(a, b), Gt(strided(a), sb), 0, 0);
  }
  same(Gelu(a), Gelu(strided(a)), 1e-6, 1e-6);  // libmvec's erf against libm's: last ulps, times 0.5x in 1 + erf
  same(Exp(a), Exp(strided(a)), 0, 1e-6);
  Tensor with_nan = a.Clone();
  {
    NoGradGuard no_grad;
    with_nan.Narrow(0, 3, 1).Narrow(1, 7, 1).CopyFrom(Full({1, 1}, NAN));
  }
  for (const Tensor& x : {a, with_nan}) {
    same(Max(x, {1}), Max(strided(x), {1}), 0, 0);  // NaN propagates on both paths
    same(Min(x, {1}), Min(strided(x), {1}), 0, 0);
    same(Sum(x, {1}), Sum(strided(x), {1}), 1e-5, 1e-6);  // 8 partial sums against one (50 terms of |x| ~ 2)
  }
  // A dense reduction over 1003 elements (not a multiple of 8) against the f64 sum.
  Tensor long_row = Normal({2, 1003}, 1, 1, &gen);
  std::vector<float> v = long_row.ToVector<float>();
  double want = 0;
  for (int i = 1003; i < 2006; ++i) want += v[i];
  EXPECT_NEAR(Sum(long_row, {1}).ToVector<float>()[1], want, 1e-3);
}

TEST(Ops, SoftmaxAndLogSoftmax) {
  Tensor x = F({1, 2, 3, 1000, 1000, 1000}, {2, 3});
  double e1 = std::exp(1.0), e2 = std::exp(2.0), e3 = std::exp(3.0), z = e1 + e2 + e3;
  ExpectClose(Softmax(x, 1), {e1 / z, e2 / z, e3 / z, 1.0 / 3, 1.0 / 3, 1.0 / 3}, 1e-7, 1e-6);
  ExpectClose(LogSoftmax(x, -1),
              {1 - std::log(z), 2 - std::log(z), 3 - std::log(z), -std::log(3.0), -std::log(3.0),
               -std::log(3.0)},
              1e-6, 1e-6);
  ExpectClose(Sum(Softmax(Iota({3, 5}), 0), {0}), std::vector<double>(5, 1.0), 1e-6, 0);
  // Along an inner dim (x is (2, 2, 3), softmax over the middle): each pair
  // x[i][0][k], x[i][1][k] differs by log 3 (-> 0.25, 0.75), -log 3 or 0.
  const float l3 = static_cast<float>(std::log(3.0));
  Tensor inner = F({0, l3, 5, l3, 0, 5, 1, 1, 1, 1 + l3, 1, 1 - l3}, {2, 2, 3});
  ExpectClose(Softmax(inner, 1), {0.25, 0.75, 0.5, 0.75, 0.25, 0.5, 0.25, 0.5, 0.75, 0.75, 0.5, 0.25}, 1e-6, 1e-6);
  // Non-finite rows, as PyTorch: a NaN or +inf anywhere makes the row NaN; -inf is exp(-inf) = 0.
  const float inf = INFINITY, nan = NAN;
  ExpectClose(Softmax(F({0, l3, nan, 0, inf, 0, -inf, 0}, {4, 2}), 1),
              {0.25, 0.75, NAN, NAN, NAN, NAN, 0, 1}, 1e-7, 1e-6);
  // Rows of 20 (the kernel takes the maximum 16 values at a time, then the
  // rest): 19 values of 199 and one of 200, inside the first 16 or in the rest
  // (exp(199) overflows f32, so a maximum that missed the 200 gives NaN:
  // e^0 / (1 + 19/e) and e^-1 / (1 + 19/e)); a NaN, a +inf and a -inf among zeros.
  std::vector<float> rows(5 * 20, 0.0f);
  std::fill(rows.begin(), rows.begin() + 40, 199.0f);
  rows[0 * 20 + 5] = rows[1 * 20 + 18] = 200.0f;
  rows[2 * 20 + 9] = nan;
  rows[3 * 20 + 12] = inf;
  rows[4 * 20 + 7] = -inf;
  const double z20 = 1 + 19 / std::exp(1.0);
  std::vector<double> want(5 * 20);
  for (int j = 0; j < 20; ++j) {
    want[0 * 20 + j] = j == 5 ? 1 / z20 : 1 / std::exp(1.0) / z20;
    want[1 * 20 + j] = j == 18 ? 1 / z20 : 1 / std::exp(1.0) / z20;
    want[2 * 20 + j] = want[3 * 20 + j] = NAN;
    want[4 * 20 + j] = j == 7 ? 0.0 : 1.0 / 19;
  }
  ExpectClose(Softmax(F(rows, {5, 20}), 1), want, 1e-7, 1e-6);
}

TEST(Ops, LayerNormHandValues) {
  // Row 0 holds 1, 2, 3, 4 (mean 2.5, biased variance 1.25), row 1 the same
  // spread reversed around 11.5; eps 2.75 makes 1 / sqrt(var + eps) = 0.5, so
  // x̂ = -0.75, -0.25, 0.25, 0.75 and its reverse, and y = x̂ w + b.
  Tensor x = F({1, 2, 3, 4, 13, 12, 11, 10}, {2, 4});
  Tensor w = F({2, -1, 1, 0}, {4}), b = F({1, 0, 0.5, 3}, {4});
  std::array<Tensor, 3> out = NativeLayerNorm(x, w, b, 2.75);
  ExpectClose(out[0], {-0.5, 0.25, 0.75, 3, 2.5, -0.25, 0.25, 3}, 1e-6, 0);
  EXPECT_EQ(out[1].shape(), (Shape{2, 1}));
  ExpectClose(out[1], {2.5, 11.5}, 1e-6, 0);
  ExpectClose(out[2], {0.5, 0.5}, 1e-6, 0);
  // Over two trailing dims: the same 8 values as one row (mean 7, deviations
  // -6, -5, -4, -3 and their negatives: biased variance 172 / 8 = 21.5; eps 3.5
  // makes rstd 1 / 5), so the first column's 1 and 13 become -1.2 and 1.2.
  std::array<Tensor, 3> two = NativeLayerNorm(x, Ones({2, 4}), Zeros({2, 4}), 3.5);
  EXPECT_EQ(two[1].shape(), (Shape{1, 1}));
  ExpectClose(two[1], {7}, 1e-6, 0);
  ExpectClose(two[2], {0.2}, 1e-7, 1e-6);
  ExpectClose(two[0].Slice(1, 0, 1).Reshape({2}), {-1.2, 1.2}, 1e-6, 1e-6);
  EXPECT_THROW(NativeLayerNorm(x, Ones({3}), Zeros({3}), 1e-5), Error);           // trailing shape
  EXPECT_THROW(NativeLayerNorm(x, Ones({4}, DType::kF64), Zeros({4}), 1e-5), Error);  // dtype
  EXPECT_THROW(NativeLayerNorm(x, Ones({4}), Zeros({4}), -1), Error);             // eps
}

// ---- matmul and conv2d --------------------------------------------------------------

TEST(Ops, MatmulHandValues) {
  Tensor a = F({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = F({7, 8, 9, 10, 11, 12}, {3, 2});
  ExpectClose(Matmul(a, b), {58, 64, 139, 154}, 0, 0);
  // 1-D operands, as torch.matmul.
  EXPECT_EQ(Matmul(F({1, 2, 3}, {3}), b).shape(), (Shape{2}));
  ExpectClose(Matmul(F({1, 2, 3}, {3}), b), {58, 64}, 0, 0);
  ExpectClose(Matmul(a, F({1, 0, -1}, {3})), {-2, -2}, 0, 0);
  ExpectClose(Matmul(F({1, 2}, {2}), F({3, 4}, {2})), {11}, 0, 0);
  // Batched, with broadcasting: (2, 1, 2, 3) @ (4, 3, 2) -> (2, 4, 2, 2).
  Tensor ab = Stack({a, Mul(a, 2)}, 0).Unsqueeze(1);
  Tensor bb = Stack({b, b, Neg(b), Zeros({3, 2})}, 0);
  Tensor y = Matmul(ab, bb);
  EXPECT_EQ(y.shape(), (Shape{2, 4, 2, 2}));
  ExpectClose(y.Select(0, 1).Select(0, 2), {-116, -128, -278, -308}, 0, 0);
  // Transposed operands take oneDNN's strided path.
  ExpectClose(Matmul(b.Transpose(0, 1), a.Transpose(0, 1)), {58, 139, 64, 154}, 0, 0);
  // f64 and integers run the reference kernel.
  ExpectClose(Matmul(a.To(DType::kF64), b.To(DType::kF64)), {58, 64, 139, 154}, 0, 0);
  ExpectClose(Matmul(a.To(DType::kI32), b.To(DType::kI32)), {58, 64, 139, 154}, 0, 0);
  ExpectClose(Matmul(a.To(DType::kBF16), b.To(DType::kBF16)), {58, 64, 139, 154}, 0, 0.01);
}

TEST(Ops, Conv2dHandValues) {
  // 1x1x3x3 input 1..9, 2x2 kernel of ones: each output is the sum of a window.
  Tensor x = Add(Iota({1, 1, 3, 3}), 1);
  Tensor w = Ones({1, 1, 2, 2});
  ExpectClose(Conv2d(x, w), {12, 16, 24, 28}, 0, 0);
  ExpectClose(Conv2d(x, w, F({0.5f}, {1})), {12.5, 16.5, 24.5, 28.5}, 0, 0);
  Conv2dOptions pad;
  pad.padding[0] = pad.padding[1] = 1;
  pad.stride[0] = pad.stride[1] = 2;
  // Padded 5x5 with stride 2: windows at (-1,-1), (-1,1), (1,-1), (1,1).
  ExpectClose(Conv2d(x, w, Tensor(), pad), {1, 5, 11, 28}, 0, 0);
  Conv2dOptions dil;
  dil.dilation[0] = dil.dilation[1] = 2;
  ExpectClose(Conv2d(x, w, Tensor(), dil), {1 + 3 + 7 + 9}, 0, 0);
  // groups=2: each output channel sees its own input channel.
  Tensor x2 = Concat({x, Mul(x, 10)}, 1);
  Conv2dOptions g2;
  g2.groups = 2;
  ExpectClose(Conv2d(x2, Ones({2, 1, 2, 2}), Tensor(), g2), {12, 16, 24, 28, 120, 160, 240, 280}, 0, 0);
}

TEST(Ops, Conv2dBackwardHandValues) {
  // y = conv(x, w) with x 1x1x3x3 = 1..9 and w 1x1x2x2; for dL/dy = ones:
  // dL/dx[i][j] counts the windows covering (i, j) times the weight there;
  // dL/dw[a][b] is the sum of the window shifted by (a, b).
  Tensor w = F({1, 2, 3, 4}, {1, 1, 2, 2});
  Tensor g = Ones({1, 1, 2, 2});
  ExpectClose(Conv2dBackwardInput(g, w, {1, 1, 3, 3}, {}), {1, 3, 2, 4, 10, 6, 3, 7, 4}, 0, 0);
  Tensor x = Add(Iota({1, 1, 3, 3}), 1);
  ExpectClose(Conv2dBackwardWeight(g, x, {1, 1, 2, 2}, {}), {12, 16, 24, 28}, 0, 0);
  Conv2dOptions s2;
  s2.stride[0] = s2.stride[1] = 2;
  s2.padding[0] = s2.padding[1] = 1;
  // Padded stride-2 windows start at (-1,-1),(-1,1),(1,-1),(1,1); the weight tap
  // (1,1) sees x at (0,0),(0,2),(2,0),(2,2): 1 + 3 + 7 + 9.
  ExpectClose(Conv2dBackwardWeight(g, x, {1, 1, 2, 2}, s2), {5, 10, 10, 20}, 0, 0);
}

// A whole-tensor max, min or sum over a long dense run is split across the
// pool (Note [Split whole-tensor reductions]): the planted extremes come back at
// 1 and 2 threads, also through a transposed view (dense in memory order, so the
// same path) and through a view with gaps (the general loop), a NaN anywhere
// wins, and the sum is the same to the bit at either thread count, exact on
// integers and within rounding of a plain f64 loop on the rest.
TEST(Ops, WholeTensorReductionsSplitAcrossThreads) {
  Generator gen(12);
  Tensor x = Uniform({300, 1001}, -1, 1, &gen);  // 300,300 values: several chunks and a short last one
  float* p = x.data<float>();
  p[123457] = 7.5f;
  p[300299] = -6.25f;  // the last element, in the short last chunk
  const int before = GetNumThreads();
  std::vector<double> sums;
  for (int threads : {1, 2}) {
    SetNumThreads(threads);
    EXPECT_EQ(Max(x).item<float>(), 7.5f);
    EXPECT_EQ(Min(x).item<float>(), -6.25f);
    Tensor t = x.Transpose(0, 1);  // dense in memory order
    EXPECT_EQ(Max(t).item<float>(), 7.5f);
    EXPECT_EQ(Min(t).item<float>(), -6.25f);
    // Every other column of [x x]: x's even columns, then its odd ones, with
    // gaps between them (the general loop).
    Tensor gaps = Concat({x, x}, 1).Slice(1, 0, 2002, 2);
    EXPECT_EQ(Max(gaps).item<float>(), 7.5f);
    EXPECT_EQ(Min(gaps).item<float>(), -6.25f);
    Tensor with_nan = x.Clone();
    with_nan.data<float>()[200000] = std::nanf("");
    EXPECT_TRUE(std::isnan(Max(with_nan).item<float>()));
    EXPECT_TRUE(std::isnan(Min(with_nan).item<float>()));
    EXPECT_EQ(Sum(Ones({300, 1001})).item<float>(), 300300.0f);
    Tensor x64 = x.To(DType::kF64);
    sums.push_back(Sum(x64).item<double>());
    double plain = 0;
    for (double v : x64.ToVector<double>()) plain += v;
    EXPECT_NEAR(sums.back(), plain, 1e-9);
  }
  EXPECT_EQ(sums[0], sums[1]);
  SetNumThreads(before);
}

// Note [Extremes in lanes]: a dense run of 2 * 32 f32 (2 * 16 f64) values or
// more keeps 32 (16) running extremes and finishes the last values one by one.
// For run lengths on both sides of those bounds, an extreme planted at each
// position of the run (first value, inside the lanes, in the tail) comes back
// as std::max_element/min_element find it, and one NaN anywhere gives NaN.
TEST(Ops, DenseExtremesFindEveryPosition) {
  Generator gen(17);
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (int64_t n : {1, 31, 63, 64, 65, 95, 127, 128, 129, 200}) {
      Tensor base = Uniform({n}, -1, 1, &gen, DType::kF64);
      for (int64_t at = 0; at < n; ++at) {
        SCOPED_TRACE(::testing::Message() << Name(dt) << " n " << n << " at " << at);
        std::vector<double> v = base.ToVector<double>();
        v[at] = at % 2 ? 5.0 + at : -5.0 - at;  // the extreme in one direction, the other is a random value
        if (dt == DType::kF32) {
          for (double& e : v) e = static_cast<float>(e);  // the values x holds
        }
        Tensor x = Tensor::FromVector<double>(v, {1, n}).To(dt);
        EXPECT_EQ(Max(x, {1}).item<double>(), *std::max_element(v.begin(), v.end()));
        EXPECT_EQ(Min(x, {1}).item<double>(), *std::min_element(v.begin(), v.end()));
        v[at] = NAN;
        Tensor with_nan = Tensor::FromVector<double>(v, {1, n}).To(dt);
        EXPECT_TRUE(std::isnan(Max(with_nan, {1}).item<double>()));
        EXPECT_TRUE(std::isnan(Min(with_nan, {1}).item<double>()));
      }
    }
  }
}

// Note [Column reductions]: a channels-last activation's sum over H and W
// (global average pooling) and a sum over a matrix's rows (a bias gradient)
// take the column loop, not the general one (the counter says which ran), and
// give, per column, the f64 sum of its values in row order to the bit and the
// extremes std::max/min find; a NaN in one column makes that column's extremes
// NaN and no other's. 300 columns cross the loop's block of 256.
TEST(Ops, ColumnReductionsEqualTheSerialSumPerColumn) {
  Generator gen(29);
  for (DType dt : {DType::kF32, DType::kF64}) {
    struct Case {
      Tensor x;                    // the view reduced
      std::vector<int64_t> dims;   // over these
      int64_t outer, rows, cols;   // its memory: (outer, rows, cols), dense
    };
    Tensor pooled = Uniform({2, 7, 7, 37}, -1, 1, &gen, DType::kF64).To(dt);
    Tensor grad = Uniform({5, 300}, -1, 1, &gen, DType::kF64).To(dt);
    std::vector<double> nan_memory = Uniform({3, 4, 40}, -1, 1, &gen, DType::kF64).ToVector<double>();
    nan_memory[2 * 160 + 1 * 40 + 11] = NAN;  // outer 2, row 1, column 11
    Tensor with_nan = Tensor::FromVector<double>(nan_memory, {3, 4, 40}).To(dt);
    for (const Case& k : {Case{pooled.Permute({0, 3, 1, 2}), {2, 3}, 2, 49, 37}, Case{grad, {0}, 1, 5, 300},
                          Case{with_nan, {1}, 3, 4, 40}}) {
      SCOPED_TRACE(::testing::Message() << Name(dt) << " " << k.outer << "x" << k.rows << "x" << k.cols);
      std::vector<double> m = k.x.Contiguous().ToVector<double>();
      if (k.x.is_channels_last()) m = k.x.Permute({0, 2, 3, 1}).Contiguous().ToVector<double>();
      const size_t general = cpu::ReductionGeneralLoops();
      std::vector<double> sum = Sum(k.x, k.dims).To(DType::kF64).ToVector<double>();
      std::vector<double> max = Max(k.x, k.dims).To(DType::kF64).ToVector<double>();
      std::vector<double> min = Min(k.x, k.dims).To(DType::kF64).ToVector<double>();
      EXPECT_EQ(cpu::ReductionGeneralLoops(), general) << "a column reduction took the general loop";
      ASSERT_EQ(sum.size(), static_cast<size_t>(k.outer * k.cols));
      for (int64_t o = 0; o < k.outer; ++o) {
        for (int64_t c = 0; c < k.cols; ++c) {
          double s = 0, hi = -INFINITY, lo = INFINITY;
          bool nan = false;
          for (int64_t r = 0; r < k.rows; ++r) {
            const double v = m[(o * k.rows + r) * k.cols + c];
            s += v;
            nan |= std::isnan(v);
            hi = std::max(hi, v);
            lo = std::min(lo, v);
          }
          const size_t at = o * k.cols + c;
          const double expect = dt == DType::kF32 ? static_cast<float>(s) : s;
          if (nan) {
            EXPECT_TRUE(std::isnan(sum[at]) && std::isnan(max[at]) && std::isnan(min[at])) << o << "," << c;
          } else {
            EXPECT_EQ(sum[at], expect) << o << "," << c;
            EXPECT_EQ(max[at], hi) << o << "," << c;
            EXPECT_EQ(min[at], lo) << o << "," << c;
          }
        }
      }
      Argmax(k.x.Contiguous(), k.dims[0]);  // counts in index order: the general loop
      EXPECT_EQ(cpu::ReductionGeneralLoops(), general + 1);
    }
  }
}

// An observer's min and max of a channels-last activation, and a sum over it,
// read its memory as one dense run (the reduced dims in memory order): the
// result is the one of the same memory read flat, to the bit, which the
// general loop (logical order) would not give a sum of f64 values; extremes
// planted at the first and last bytes of memory come back.
TEST(Ops, WholeTensorReductionsOfChannelsLastReadMemoryInOrder) {
  Generator gen(13);
  Tensor memory = Uniform({8 * 20 * 20 * 96}, -1, 1, &gen, DType::kF64);  // 307,200 values: several chunks
  double* p = memory.data<double>();
  p[0] = 3.5;
  p[memory.numel() - 1] = -2.75;
  Tensor activation = memory.View({8, 20, 20, 96}).Permute({0, 3, 1, 2});  // (N, C, H, W), channels-last
  ASSERT_TRUE(activation.is_channels_last() && !activation.is_contiguous());
  EXPECT_EQ(Max(activation).item<double>(), 3.5);
  EXPECT_EQ(Min(activation).item<double>(), -2.75);
  EXPECT_EQ(Sum(activation).item<double>(), Sum(memory).item<double>());
  double plain = 0;
  for (double v : memory.ToVector<double>()) plain += v;
  EXPECT_NEAR(Sum(activation).item<double>(), plain, 1e-9);
  EXPECT_NE(Sum(activation).item<double>(), Sum(activation.Contiguous()).item<double>())
      << "the same values summed in another order should differ in the last bits";
}

TEST(Ops, MaxPoolAndItsBackward) {
  Tensor x = F({1, 5, 2, 0, 3, 4, 9, 8, 7, 6, 1, 2, 0, 1, 3, 4}, {1, 1, 4, 4});
  Pool2dOptions k2;
  ExpectClose(MaxPool2d(x, k2), {5, 9, 7, 4}, 0, 0);
  Pool2dOptions k3;
  k3.kernel[0] = k3.kernel[1] = 3;
  k3.stride[0] = k3.stride[1] = 1;
  ExpectClose(MaxPool2d(x, k3), {9, 9, 9, 9}, 0, 0);
  Pool2dOptions pad;
  pad.kernel[0] = pad.kernel[1] = 2;
  pad.padding[0] = pad.padding[1] = 1;
  ExpectClose(MaxPool2d(x, pad), {1, 5, 0, 7, 9, 8, 0, 3, 4}, 0, 0);
  // Quantized input: pooled on the integers, parameters kept (x - 4 in steps of 0.5).
  QuantParams qp = QuantParams::PerTensor(0.5, -8);
  Tensor q = MaxPool2d(Quantize(Sub(x, 4.0), DType::kQInt8, qp), k2);
  EXPECT_EQ(q.dtype(), DType::kQInt8);
  EXPECT_EQ(q.qparams(), qp);
  EXPECT_EQ(q.IntRepr(), (std::vector<int32_t>{-6, 2, -2, -8}));  // (max - 4) / 0.5 - 8
  // Channels-last input: the same values, a channels-last output.
  Generator gen(3);
  Tensor big = Normal({2, 5, 7, 6}, 0, 1, &gen);
  Pool2dOptions k3s2{.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}};
  Tensor cl = MaxPool2d(big.ChannelsLast(), k3s2);
  EXPECT_TRUE(cl.is_channels_last());
  EXPECT_EQ(cl.ToVector<float>(), MaxPool2d(big, k3s2).ToVector<float>());
  // Backward routes each window's gradient to its argmax; overlapping windows add.
  Tensor idx = Tensor::FromVector<int64_t>({6, 6, 8, 6}, {1, 1, 2, 2});
  ExpectClose(MaxPool2dBackward(F({1, 2, 3, 4}, {1, 1, 2, 2}), idx, {1, 1, 4, 4}),
              {0, 0, 0, 0, 0, 0, 7, 0, 3, 0, 0, 0, 0, 0, 0, 0}, 0, 0);
}

// In inference max_pool2d computes no argmax (its own branch-free kernel):
// bit-identical to the pass that keeps the argmax (held to hand values above),
// over dtypes, both layouts, ties, NaN and padding. (That the frontend keeps
// the argmax where a gradient is taken: gradcheck_test's max_pool2d row.)
TEST(Ops, MaxPoolWithoutIndicesMatchesThePassWithIndices) {
  Generator gen(11);
  OpAttrs attrs;
  attrs.kernel[0] = attrs.kernel[1] = 3;
  attrs.stride[0] = attrs.stride[1] = 2;
  attrs.padding[0] = attrs.padding[1] = 1;
  for (DType d : {DType::kF32, DType::kF64, DType::kBF16, DType::kQUInt8, DType::kQInt8}) {
    for (bool channels_last : {false, true}) {
      SCOPED_TRACE(std::string(Name(d)) + (channels_last ? " channels-last" : " contiguous"));
      // (N, H, W, C) values on a grid of 0.25 (ties between taps); one NaN for
      // floating dtypes, at n 1, h 3, w 4, c 5.
      Tensor base = Mul(Round(Mul(Normal({2, 9, 8, 67}, 0, 1, &gen), 4.0)), 0.25);
      if (IsFloating(d)) base.data<float>()[((1 * 9 + 3) * 8 + 4) * 67 + 5] = std::nanf("");
      QuantParams qp = QuantParams::PerTensor(0.25, d == DType::kQUInt8 ? 128 : 0);
      Tensor x = (IsQuantized(d) ? Quantize(base, d, qp) : base.To(d)).Permute({0, 3, 1, 2});
      if (!channels_last) x = x.Contiguous();
      auto empty = [&](DType t) {
        Shape shape = channels_last ? Shape{2, 5, 4, 67} : Shape{2, 67, 5, 4};
        Tensor e = IsQuantized(t) ? Tensor::Empty(shape, t, x.device(), qp) : Tensor::Empty(shape, t, x.device());
        return channels_last ? e.Permute({0, 3, 1, 2}) : e;
      };
      Tensor with[2] = {empty(d), empty(DType::kI64)};
      Dispatch(Op::kMaxPool2d, {&x, 1}, with, attrs);
      Tensor without[2] = {empty(d), Tensor()};
      Dispatch(Op::kMaxPool2d, {&x, 1}, without, attrs);
      EXPECT_FALSE(without[1].defined());
      Tensor a = with[0].Contiguous(), b = without[0].Contiguous();
      size_t bytes = StorageBytes(d, a.numel());
      EXPECT_EQ(std::memcmp(a.raw_data(), b.raw_data(), bytes), 0);
      if (IsFloating(d)) {
        // Output (oh 2, ow 2) reads h 3..5, w 3..5: the NaN wins it.
        EXPECT_TRUE(std::isnan(b.To(DType::kF32).data<float>()[((1 * 67 + 5) * 5 + 2) * 4 + 2]));
      }
    }
  }
}

// Worked by hand: two channels over N = 2, W = 2, each with biased variance
// 1.25; eps 2.75 makes 1 / sqrt(var + eps) exactly 0.5.
TEST(Ops, BatchNormTrainingAndBackward) {
  // x[n][c][0][w]: channel 0 holds 1, 2 | 3, 4 (mean 2.5), channel 1 holds 10, 12 | 11, 13 (mean 11.5).
  Tensor x = F({1, 2, 10, 12, 3, 4, 11, 13}, {2, 2, 1, 2});
  Tensor w = F({2, -1}, {2}), b = F({1, 0}, {2});
  std::array<Tensor, 3> out = BatchNormTraining(x, w, b, 2.75);
  // x̂ = (x - mean) / 2: channel 0 -0.75, -0.25, 0.25, 0.75; y = 2 x̂ + 1 and -x̂.
  ExpectClose(out[0], {-0.5, 0.5, 0.75, -0.25, 1.5, 2.5, 0.25, -0.75}, 1e-6, 0);
  ExpectClose(out[1], {2.5, 11.5}, 1e-6, 0);
  ExpectClose(out[2], {1.25, 1.25}, 1e-6, 0);
  // Channel 0: gy = 1 at its first element, so grad bias 1 and grad weight
  // Σ gy x̂ = -0.75; grad x = w / 2 (gy - 1/4 - x̂ (-0.75) / 4). Channel 1: gy = 2
  // everywhere, so grad bias 8, grad weight 2 Σ x̂ = 0 and grad x = 0.
  Tensor gy = F({1, 0, 2, 2, 0, 0, 2, 2}, {2, 2, 1, 2});
  std::array<Tensor, 3> g = BatchNormBackward(gy, x, w, out[1], out[2], 2.75);
  ExpectClose(g[0], {0.609375, -0.296875, 0, 0, -0.203125, -0.109375, 0, 0}, 1e-6, 0);
  ExpectClose(g[1], {-0.75, 0}, 1e-6, 0);
  ExpectClose(g[2], {1, 8}, 1e-6, 0);
  // The epilogue (Note [Batch norm epilogue]), worked by hand from the y above.
  // relu(y): the negatives go; ReLU's mask y > 0 keeps gy at elements 2 and 6
  // (both channel 1, x̂ = -0.75 and -0.25), so channel 0 gets nothing and channel
  // 1 grad bias 4, grad weight 2 (-0.75) + 2 (-0.25) = -2 and grad x =
  // -1 / 2 (g - 4/4 - x̂ (-2) / 4).
  ExpectClose(BatchNormTraining(x, w, b, 2.75, Tensor(), /*relu=*/true)[0], {0, 0.5, 0.75, 0, 1.5, 2.5, 0.25, 0}, 0, 0);
  std::array<Tensor, 4> gr = BatchNormReluBackward(gy, x, w, b, out[1], out[2], 2.75);
  ExpectClose(gr[0], {0, 0, -0.3125, 0.4375, 0, 0, -0.4375, 0.3125}, 1e-6, 0);
  ExpectClose(gr[1], {0, -2}, 1e-6, 0);
  ExpectClose(gr[2], {0, 4}, 1e-6, 0);
  EXPECT_FALSE(gr[3].defined());
  // With a residual that brings four values to exactly 0 (masked: ReLU passes
  // no gradient at 0) and one from -0.75 to 0.25: gy survives at elements 2 and
  // 7 (x̂ = -0.75 and 0.75), so grad weight 0, grad bias 4, grad x = -1/2 (g - 1);
  // the residual's gradient is the masked gy.
  Tensor r = F({0.5, -0.5, 0, 0.25, 0, 0, -0.25, 1}, {2, 2, 1, 2});
  ExpectClose(BatchNormTraining(x, w, b, 2.75, r, /*relu=*/true)[0], {0, 0, 0.75, 0, 1.5, 2.5, 0, 0.25}, 0, 0);
  ExpectClose(BatchNormTraining(x, w, b, 2.75, r, /*relu=*/false)[0], {0, 0, 0.75, 0, 1.5, 2.5, 0, 0.25}, 0, 0);
  gr = BatchNormReluBackward(gy, x, w, b, out[1], out[2], 2.75, r);
  ExpectClose(gr[0], {0, 0, -0.5, 0.5, 0, 0, 0.5, -0.5}, 1e-6, 0);
  ExpectClose(gr[1], {0, 0}, 1e-6, 0);
  ExpectClose(gr[2], {0, 4}, 1e-6, 0);
  ExpectClose(gr[3], {0, 0, 2, 0, 0, 0, 0, 2}, 0, 0);
  EXPECT_THROW(BatchNormTraining(x, w, b, 2.75, F({1, 2}, {2, 1, 1, 1})), Error);  // residual not like x
  // f64 keeps f64 statistics; bad operands name the op and the shapes.
  EXPECT_EQ(BatchNormTraining(x.To(DType::kF64), w.To(DType::kF64), b.To(DType::kF64), 1e-5)[1].dtype(), DType::kF64);
  EXPECT_THROW(BatchNormTraining(x, F({1, 1, 1}, {3}), b, 1e-5), Error);
  EXPECT_THROW(BatchNormTraining(x.View({2, 2, 2}), w, b, 1e-5), Error);
  EXPECT_THROW(BatchNormTraining(F({1, 2}, {1, 2, 1, 1}), w, b, 1e-5), Error);  // one value per channel
}

// Channels-last batch norm (rows of C) against the contiguous kernel: the
// same statistics, outputs and gradients to rounding, and channels-last out.
// 5 channels take the channels-last sums' plain loop; 37 two blocks of 16 and a
// tail of 5 (Note [Channel sums in registers]).
TEST(Ops, BatchNormChannelsLastMatchesContiguous) {
  Generator gen(14);
  for (int64_t C : {5, 37}) {
    SCOPED_TRACE(C);
    Tensor x = Add(Mul(Normal({6, C, 7, 9}, 0, 1, &gen), 2.0), 3.0);
    Tensor w = Normal({C}, 1, 0.3, &gen), b = Normal({C}, 0, 0.3, &gen), gy = Normal({6, C, 7, 9}, 0, 1, &gen);
    std::array<Tensor, 3> want = BatchNormTraining(x, w, b, 1e-3);
    std::array<Tensor, 3> got = BatchNormTraining(x.ChannelsLast(), w, b, 1e-3);
    EXPECT_TRUE(got[0].is_channels_last() && !got[0].is_contiguous());
    for (int i = 0; i < 3; ++i) ExpectClose(got[i], want[i].ToVector<double>(), 1e-5, 1e-5);
    std::array<Tensor, 3> gwant = BatchNormBackward(gy, x, w, want[1], want[2], 1e-3);
    std::array<Tensor, 3> ggot = BatchNormBackward(gy, x.ChannelsLast(), w, want[1], want[2], 1e-3);
    EXPECT_TRUE(ggot[0].is_channels_last() && !ggot[0].is_contiguous());
    for (int i = 0; i < 3; ++i) ExpectClose(ggot[i], gwant[i].ToVector<double>(), 1e-4, 1e-5);
  }
}

// Note [Batch norm epilogue]: relu(bn(x) + residual) in the batch-norm kernel
// equals the composition Relu(Add(y, residual)) bit for bit, and its backward
// equals ThresholdBackward then BatchNormBackward, in every floating dtype and
// both layouts; a quarter of the residual cancels bn(x) exactly, so ReLU's mask
// meets values that are exactly 0. 21 channels: one block of 16 and a tail in
// the channels-last sums (Note [Channel sums in registers]).
TEST(Ops, BatchNormEpilogueEqualsTheComposition) {
  Generator gen(21);
  for (DType d : {DType::kF32, DType::kF64, DType::kBF16, DType::kF16}) {
    for (bool channels_last : {false, true}) {
      SCOPED_TRACE(std::string(Name(d)) + (channels_last ? " channels-last" : " contiguous"));
      auto layout = [&](Tensor t) { return channels_last ? t.ChannelsLast() : t.Contiguous(); };
      Tensor x = layout(Add(Normal({4, 21, 5, 7}, 0, 2, &gen), 1.0).To(d));
      Tensor w = Normal({21}, 1, 0.5, &gen).To(d), b = Normal({21}, 0, 0.5, &gen).To(d);
      Tensor gy = layout(Normal(x.shape(), 0, 1, &gen).To(d));
      std::array<Tensor, 3> plain = BatchNormTraining(x, w, b, 1e-5);
      Tensor cancel = Lt(Uniform(x.shape(), 0, 1, &gen), 0.25).To(d);  // 1 where the residual cancels bn(x)
      Tensor r = layout(Add(Mul(Neg(plain[0]), cancel),
                            Mul(Normal(x.shape(), 0, 1, &gen).To(d), Sub(OnesLike(cancel), cancel))));
      for (bool with_residual : {false, true}) {
        SCOPED_TRACE(with_residual ? "residual" : "no residual");
        Tensor res = with_residual ? r : Tensor();
        Tensor pre = with_residual ? Add(plain[0], r) : plain[0];
        if (with_residual) {
          ASSERT_GT(Sum(Eq(pre, 0).To(DType::kF32)).item<float>(), 0) << "no exact zeros";
        }
        std::array<Tensor, 3> fused = BatchNormTraining(x, w, b, 1e-5, res, /*relu=*/true);
        EXPECT_EQ(fused[0].is_channels_last() && !fused[0].is_contiguous(), channels_last);
        ExpectClose(fused[0].To(DType::kF64), Relu(pre).To(DType::kF64).ToVector<double>(), 0, 0);
        for (int i = 1; i < 3; ++i) ExpectClose(fused[i], plain[i].ToVector<double>(), 0, 0);
        std::array<Tensor, 4> g = BatchNormReluBackward(gy, x, w, b, plain[1], plain[2], 1e-5, res);
        Tensor masked = ThresholdBackward(gy, pre);
        std::array<Tensor, 3> want = BatchNormBackward(masked, x, w, plain[1], plain[2], 1e-5);
        for (int i = 0; i < 3; ++i) ExpectClose(g[i].To(DType::kF64), want[i].To(DType::kF64).ToVector<double>(), 0, 0);
        ASSERT_EQ(g[3].defined(), with_residual);
        if (with_residual) ExpectClose(g[3].To(DType::kF64), masked.To(DType::kF64).ToVector<double>(), 0, 0);
      }
    }
  }
}

// The one-pass moments (Note [Fused batch norm]) on a channel whose mean is a
// million times its spread: the variance to f32 precision against the two-pass
// variance in f64 (core's Var), where E[x^2] - E[x]^2 would lose every digit.
TEST(Ops, BatchNormVarianceOfAFarFromZeroChannel) {
  Generator gen(13);
  Tensor x = Add(Mul(Normal({8, 2, 5, 7}, 0, 1, &gen), 0.01), 1e4);  // mean 1e4, std 1e-2 (f32 step there: 1e-3)
  std::array<Tensor, 3> out = BatchNormTraining(x, Ones({2}), Zeros({2}), 1e-5);
  Tensor want = Var(x.To(DType::kF64).Transpose(0, 1).Reshape({2, -1}), {1}, false, /*correction=*/0);
  ExpectClose(out[2], want.ToVector<double>(), 0, 1e-5);
  ExpectClose(out[1], Mean(x.To(DType::kF64), {0, 2, 3}).ToVector<double>(), 0, 1e-7);  // stored as f32
}

TEST(Ops, IndexAddAndScatterAdd) {
  Tensor src = F({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor idx = Tensor::FromVector<int64_t>({2, 0, 2}, {3});
  ExpectClose(IndexAdd({4, 2}, 0, idx, src), {3, 4, 0, 0, 6, 8, 0, 0}, 0, 0);  // rows 0 and 2 of src add
  Tensor gi = Tensor::FromVector<int64_t>({1, 1, 0, 2, 2, 2}, {3, 2});
  ExpectClose(ScatterAdd({3, 3}, 1, gi, src), {0, 3, 0, 3, 0, 4, 0, 0, 11}, 0, 0);
  EXPECT_THROW(IndexAdd({2, 2}, 0, Tensor::FromVector<int64_t>({0, 1, 2}, {3}), src), Error);
}

// ---- joining, indexing, creation ----------------------------------------------------

TEST(Ops, ConcatStackIndexSelectGather) {
  Tensor a = Iota({2, 2});
  Tensor b = F({9, 8}, {2, 1});
  Tensor c = Concat({a, b}, 1);
  EXPECT_EQ(c.shape(), (Shape{2, 3}));
  ExpectClose(c, {0, 1, 9, 2, 3, 8}, 0, 0);
  ExpectClose(Concat({a, a}, 0), {0, 1, 2, 3, 0, 1, 2, 3}, 0, 0);
  EXPECT_EQ(Concat({a, a.To(DType::kF64)}, 0).dtype(), DType::kF64);
  Tensor s = Stack({a, Neg(a)}, 2);
  EXPECT_EQ(s.shape(), (Shape{2, 2, 2}));
  ExpectClose(s, {0, 0, 1, -1, 2, -2, 3, -3}, 0, 0);
  Tensor x = Iota({3, 4});
  Tensor idx = Tensor::FromVector<int64_t>({2, 0, 2}, {3});
  ExpectClose(IndexSelect(x, 0, idx), {8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11}, 0, 0);
  ExpectClose(IndexSelect(x, 1, Tensor::FromVector<int32_t>({3, 1}, {2})), {3, 1, 7, 5, 11, 9}, 0, 0);
  Tensor gi = Tensor::FromVector<int64_t>({3, 0, 1, 1, 2, 2}, {3, 2});
  ExpectClose(Gather(x, 1, gi), {3, 0, 5, 5, 10, 10}, 0, 0);
  ExpectClose(Gather(x, 0, Tensor::FromVector<int64_t>({2, 1, 0, 0}, {1, 4})), {8, 5, 2, 3}, 0, 0);
  EXPECT_THROW(IndexSelect(x, 0, Tensor::FromVector<int64_t>({3}, {1})), Error);
  EXPECT_THROW(Gather(x, 1, Tensor::FromVector<int64_t>({-1}, {1, 1})), Error);
}

// Note [Channels-last concat]: channels-last inputs, and a subsampled slice of
// one, concatenate into a channels-last output along the channels or the batch;
// the values are those of the contiguous inputs' concatenation (an NCHW output).
// An NCHW input among them (channels not innermost) gives NCHW, as before.
TEST(Ops, ConcatKeepsChannelsLast) {
  Tensor a = Iota({2, 2, 3, 2}).ChannelsLast();
  Tensor b = Iota({2, 3, 6, 2}).ChannelsLast().Slice(2, 0, 6, 2);  // (2, 3, 3, 2), channels innermost
  ASSERT_FALSE(b.is_channels_last());
  Tensor c = Concat({a, b}, 1);
  EXPECT_TRUE(c.suggests_channels_last());
  EXPECT_EQ(c.ToVector<float>(), Concat({a.Contiguous(), b.Contiguous()}, 1).ToVector<float>());
  EXPECT_TRUE(Concat({a, a}, 0).suggests_channels_last());
  EXPECT_EQ(Concat({a, a}, 0).ToVector<float>(), Concat({a.Contiguous(), a.Contiguous()}, 0).ToVector<float>());
  // Element (1, 3, 2, 1) of c is b's (1, 1, 2, 1), Iota's (1, 1, 4, 1): ((1 * 3 + 1) * 6 + 4) * 2 + 1 = 57.
  EXPECT_EQ(c.Select(0, 1).Select(0, 3).Select(0, 2).Select(0, 1).item<float>(), 57);
  Tensor mixed = Concat({a, Iota({2, 2, 3, 2})}, 1);
  EXPECT_TRUE(mixed.is_contiguous());
  EXPECT_EQ(mixed.ToVector<float>(), Concat({a.Contiguous(), Iota({2, 2, 3, 2})}, 1).ToVector<float>());
}

TEST(Ops, Creation) {
  ExpectClose(Zeros({2, 2}), {0, 0, 0, 0}, 0, 0);
  ExpectClose(Ones({3}, DType::kI8), {1, 1, 1}, 0, 0);
  ExpectClose(Full({2}, 7.5, DType::kBF16), {7.5, 7.5}, 0, 0);
  ExpectClose(Arange(0, 5), {0, 1, 2, 3, 4}, 0, 0);
  ExpectClose(Arange(1, 2, 0.25), {1, 1.25, 1.5, 1.75}, 0, 0);
  ExpectClose(Arange(5, 0, -2, DType::kI64), {5, 3, 1}, 0, 0);
  ExpectClose(Eye(3), {1, 0, 0, 0, 1, 0, 0, 0, 1}, 0, 0);
  EXPECT_EQ(Eye(0).numel(), 0);
  Tensor t = Zeros({2, 3});
  Tensor row = t.Select(0, 1);
  FillInplace(row, 4);
  ExpectClose(t, {0, 0, 0, 4, 4, 4}, 0, 0);
}

TEST(Ops, RandomIsSeededAndHasTheRightMoments) {
  Generator g1(123), g2(123), g3(124);
  Tensor u1 = Uniform({100000}, -1, 3, &g1);
  Tensor u2 = Uniform({100000}, -1, 3, &g2);
  EXPECT_EQ(u1.ToVector<float>(), u2.ToVector<float>());
  EXPECT_NE(u1.ToVector<float>(), Uniform({100000}, -1, 3, &g3).ToVector<float>());
  EXPECT_NE(u1.ToVector<float>(), Uniform({100000}, -1, 3, &g1).ToVector<float>());  // offset moved
  EXPECT_GE(Min(u1).item<float>(), -1);
  EXPECT_LT(Max(u1).item<float>(), 3);
  // Mean 1, variance 16/12; the tolerances are 6 standard errors.
  EXPECT_NEAR(Mean(u1).item<float>(), 1.0, 6 * std::sqrt(16.0 / 12 / 1e5));
  EXPECT_NEAR(Var(u1).item<float>(), 16.0 / 12, 0.03);
  Tensor n = Normal({100000}, 2, 3, &g1);
  EXPECT_NEAR(Mean(n).item<float>(), 2.0, 6 * 3 / std::sqrt(1e5));
  EXPECT_NEAR(std::sqrt(Var(n).item<float>()), 3.0, 0.05);
  Tensor bern = Bernoulli({100000}, 0.3, &g1);
  EXPECT_NEAR(Mean(bern).item<float>(), 0.3, 6 * std::sqrt(0.3 * 0.7 / 1e5));
  EXPECT_EQ(Sum(Mul(bern, Sub(bern, 1))).item<float>(), 0);  // only 0s and 1s
  ManualSeed(5);
  Tensor d1 = Normal({10});
  ManualSeed(5);
  EXPECT_EQ(d1.ToVector<float>(), Normal({10}).ToVector<float>());
  // The stream does not depend on the thread count.
  SetNumThreads(1);
  Generator g4(9);
  std::vector<float> one = Uniform({50000}, 0, 1, &g4).ToVector<float>();
  SetNumThreads(2);
  Generator g5(9);
  EXPECT_EQ(one, Uniform({50000}, 0, 1, &g5).ToVector<float>());
}

}  // namespace
}  // namespace quanta

// The backward pass: accumulation, retain_graph, no_grad, detach, hooks,
// in-place protection, and hand-computed gradients.
#include <string>

#include "autograd/autograd.h"
#include "core/ops.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

Tensor F(const std::vector<float>& v, const Shape& s) { return Tensor::FromVector<float>(v, s); }
std::vector<float> V(const Tensor& t) { return t.ToVector<float>(); }

template <typename Fn>
std::string ErrorOf(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Backward, HandComputedGradients) {
  Tensor x = F({1, 2, 3}, {3}).SetRequiresGrad();
  Tensor y = Sum(Add(Mul(x, x), x));  // dy/dx = 2x + 1
  EXPECT_TRUE(y.requires_grad());
  EXPECT_FALSE(y.is_leaf());
  Backward(y);
  EXPECT_EQ(V(x.grad()), (std::vector<float>{3, 5, 7}));
  // Broadcasting: d/db sum(a + b) = number of rows.
  Tensor a = Zeros({4, 3}).SetRequiresGrad();
  Tensor b = Zeros({3}).SetRequiresGrad();
  Backward(Sum(Add(a, b)));
  EXPECT_EQ(V(b.grad()), (std::vector<float>{4, 4, 4}));
  EXPECT_EQ(V(a.grad()), std::vector<float>(12, 1));
  // A value used twice gets both contributions; a view's gradient lands in its base.
  Tensor m = F({1, 2, 3, 4}, {2, 2}).SetRequiresGrad();
  Backward(Sum(Mul(m.Select(0, 1), m.Transpose(0, 1).Select(0, 0))));  // m[1,:] * m[:,0]
  // d/dm of m10*m00 + m11*m10: m00 <- m10, m10 <- m00 + m11, m11 <- m10.
  EXPECT_EQ(V(m.grad()), (std::vector<float>{3, 0, 5, 3}));
}

TEST(Backward, AccumulatesAndFreesTheGraph) {
  Tensor x = F({2}, {1}).SetRequiresGrad();
  Tensor y = Sum(Mul(x, 3.0));
  Backward(y, Tensor(), /*retain_graph=*/true);
  Backward(y);  // the graph was retained once
  EXPECT_EQ(V(x.grad()), (std::vector<float>{6}));
  EXPECT_NE(ErrorOf([&] { Backward(y); }).find("already freed"), std::string::npos);
  x.SetGrad(Tensor());
  Backward(Sum(Mul(x, 3.0)));
  EXPECT_EQ(V(x.grad()), (std::vector<float>{3}));
}

TEST(Backward, NoGradDetachAndLeaves) {
  Tensor x = F({1, 2}, {2}).SetRequiresGrad();
  {
    NoGradGuard no_grad;
    EXPECT_FALSE(Mul(x, 2.0).requires_grad());
  }
  EXPECT_FALSE(x.Detach().requires_grad());
  EXPECT_TRUE(x.Detach().SharesStorageWith(x));
  Tensor y = Add(Mul(x.Detach(), x), 0.0);  // the detached factor is a constant
  Backward(Sum(y));
  EXPECT_EQ(V(x.grad()), (std::vector<float>{1, 2}));
  EXPECT_EQ(ErrorOf([] { Backward(Sum(Ones({2}))); }),
            "backward: f32[] does not require grad (no input of the ops that made it does)");
  EXPECT_EQ(ErrorOf([&] { Backward(Mul(x, 2.0)); }),
            "backward: f32[2] is not a scalar; pass the upstream gradient explicitly");
  EXPECT_EQ(ErrorOf([] { Zeros({2}, DType::kI32).SetRequiresGrad(); }),
            "requires_grad: i32[2] is not floating; only floating tensors have gradients");
  // An explicit upstream gradient for a non-scalar root.
  x.SetGrad(Tensor());
  Backward(Mul(x, 2.0), F({1, 10}, {2}));
  EXPECT_EQ(V(x.grad()), (std::vector<float>{2, 20}));
}

TEST(Backward, InPlaceOnRecordedTensorsIsRefused) {
  Tensor w = F({1, 2}, {2}).SetRequiresGrad();
  EXPECT_EQ(ErrorOf([&] { AddInplace(w, Ones({2})); }),
            "add_: in-place op on f32[2] while recording gradients; use the out-of-place form or NoGradGuard");
  Tensor buffer = Zeros({2});
  EXPECT_NE(ErrorOf([&] { buffer += w; }).find("in-place op"), std::string::npos);
  NoGradGuard no_grad;
  w -= F({1, 1}, {2});  // what an optimizer does
  EXPECT_EQ(V(w), (std::vector<float>{0, 1}));
}

TEST(Backward, HooksSeeAndReplaceGradients) {
  Tensor x = F({1, -1}, {2}).SetRequiresGrad();
  std::vector<float> seen;
  RegisterHook(x, [&](const Tensor& g) {
    seen = V(g);
    return Clamp(g, -1, 1);
  });
  Tensor h = Mul(x, 5.0);
  RegisterHook(h, [](const Tensor& g) { return Mul(g, 2.0); });  // a non-leaf hook
  Backward(Sum(Add(Mul(h, h), h)));  // d/dh = 2h + 1, doubled, then times 5
  EXPECT_EQ(seen, (std::vector<float>{110, -90}));
  EXPECT_EQ(V(x.grad()), (std::vector<float>{1, -1}));
}

// Note [Channels-last slice gradients]: the gradient of a slice of a
// channels-last tensor (ResNet's option-A shortcut) is channels-last, zero
// outside the slice; a slice of an NCHW tensor keeps NCHW.
TEST(Backward, SliceGradientsKeepChannelsLast) {
  for (bool channels_last : {true, false}) {
    SCOPED_TRACE(channels_last ? "channels-last" : "NCHW");
    Tensor x = F(std::vector<float>(2 * 3 * 4 * 4, 1), {2, 3, 4, 4}).SetRequiresGrad();
    Tensor h = Mul(channels_last ? x.ChannelsLast() : x, 2.0);  // a non-leaf in that layout
    ASSERT_EQ(h.suggests_channels_last(), channels_last);
    Tensor seen;
    RegisterHook(h, [&](const Tensor& g) {
      seen = g;
      return Tensor();
    });
    // Rows and columns 1 and 3 of each plane, times 1..24 in (n, c, h, w) order.
    Tensor w = Arange(1, 25).View({2, 3, 2, 2});
    Backward(Sum(Mul(h.Slice(2, 1, 4, 2).Slice(3, 1, 4, 2), w)));
    ASSERT_TRUE(seen.defined());
    EXPECT_EQ(seen.suggests_channels_last(), channels_last);
    std::vector<float> want(2 * 3 * 4 * 4, 0);
    float k = 1;
    for (int n = 0; n < 2; ++n) {
      for (int c = 0; c < 3; ++c) {
        for (int r : {1, 3}) {
          for (int q : {1, 3}) want[((n * 3 + c) * 4 + r) * 4 + q] = k++;
        }
      }
    }
    EXPECT_EQ(V(seen), want);
    for (float& v : want) v *= 2;
    EXPECT_EQ(V(x.grad()), want);
  }
}

// Note [Leaves finish early]: a leaf's hook runs (and its grad() is written) as
// soon as the last edge into it is walked, before backward reaches earlier
// layers; a leaf used twice is finished once, with the sum.
TEST(Backward, LeavesFinishAsSoonAsTheirGradientIsComplete) {
  Tensor w1 = F({2}, {1}).SetRequiresGrad(), w2 = F({3}, {1}).SetRequiresGrad();
  Tensor x = F({5}, {1});
  std::vector<std::string> order;
  bool w1_done_when_w2_hooked = true;
  RegisterHook(w1, [&](const Tensor& g) {
    order.push_back("w1");
    EXPECT_EQ(V(g), (std::vector<float>{5 * 3 * 3}));  // x w2 w2
    return Tensor();
  });
  RegisterHook(w2, [&](const Tensor& g) {
    order.push_back("w2");
    w1_done_when_w2_hooked = w1.grad().defined();
    EXPECT_EQ(V(g), (std::vector<float>{2 * 5 * 2 * 3}));  // 2 x w1 w2 (w2 used twice)
    return Tensor();
  });
  Tensor h = Mul(x, w1);                 // layer 1
  Tensor y = Mul(Mul(h, w2), w2);        // layer 2 uses w2 twice
  Tensor z = Mul(Relu(y), 1.0);          // more work after w2's last use
  Backward(Sum(z));
  EXPECT_EQ(order, (std::vector<std::string>{"w2", "w1"}));
  EXPECT_FALSE(w1_done_when_w2_hooked);
  EXPECT_EQ(V(w1.grad()), (std::vector<float>{45}));
  EXPECT_EQ(V(w2.grad()), (std::vector<float>{60}));
}

TEST(Backward, CastsKeepTheLeafDtype) {
  Tensor x = F({1.5f}, {1}).SetRequiresGrad();
  Backward(Sum(Square(x.To(DType::kF64))));
  EXPECT_EQ(x.grad().dtype(), DType::kF32);
  EXPECT_EQ(V(x.grad()), (std::vector<float>{3}));
  // bf16 autocast: the matmul runs in bf16, the weight's gradient comes back in f32.
  Tensor w = Ones({2, 2}).SetRequiresGrad();
  {
    AutocastGuard amp(DType::kBF16);
    Tensor y = Matmul(Ones({1, 2}), w);
    EXPECT_EQ(y.dtype(), DType::kBF16);
    Backward(Sum(y));
  }
  EXPECT_EQ(w.grad().dtype(), DType::kF32);
  EXPECT_EQ(V(w.grad()), std::vector<float>(4, 1));
}

}  // namespace
}  // namespace quanta

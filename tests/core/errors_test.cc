// Each kind of misuse throws quanta::Error with a message naming the op, the
// shapes and the dtypes.
#include <string>

#include "core/ops.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

// Runs fn, expects quanta::Error, and returns its message.
template <typename F>
std::string ErrorOf(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no quanta::Error thrown";
  return "";
}

TEST(Errors, ShapeMismatch) {
  Tensor a = Zeros({2, 3});
  Tensor b = Zeros({4});
  EXPECT_EQ(ErrorOf([&] { Add(a, b); }),
            "add: shapes [2, 3] and [4] do not broadcast (f32[2, 3], f32[4])");
  EXPECT_EQ(ErrorOf([&] { Matmul(a, Zeros({2, 5})); }), "matmul: inner dims differ (f32[2, 3] @ f32[2, 5])");
  EXPECT_EQ(ErrorOf([&] { Concat({a, b}, 0); }), "concat: shapes differ outside dim 0 (f32[2, 3], f32[4])");
  EXPECT_EQ(ErrorOf([&] { a.View({4, 2}); }), "view: shape [4, 2] is invalid for f32[2, 3]");
  EXPECT_EQ(ErrorOf([&] { a.Expand({3, 3}); }), "expand: cannot expand f32[2, 3] to [3, 3] (dim 0)");
  EXPECT_EQ(ErrorOf([&] { AddInplace(b, Zeros({3, 4})); }),
            "add_: result shape [3, 4] differs from the in-place operand f32[4]");
  EXPECT_EQ(ErrorOf([&] { Conv2d(Zeros({1, 3, 8, 8}), Zeros({4, 2, 3, 3})); }),
            "conv2d: channels do not match groups=1 (f32[1, 3, 8, 8], f32[4, 2, 3, 3])");
}

TEST(Errors, WrongDType) {
  Tensor f = Zeros({2});
  EXPECT_EQ(ErrorOf([&] { Matmul(Zeros({2, 2}), Zeros({2, 2}, DType::kF64)); }),
            "matmul: dtypes differ (f32[2, 2], f64[2, 2])");
  Tensor i = Zeros({2}, DType::kI32);
  EXPECT_EQ(ErrorOf([&] { ExpInplace(i); }),
            "exp_: result is floating but i32[2] is not; use the out-of-place form");
  EXPECT_EQ(ErrorOf([&] { AddInplace(i, f); }), "add_: result dtype f32 cannot be stored in i32[2]");
  Tensor q = Tensor::FromQuantized({1, 2}, {2}, DType::kQInt8, QuantParams::PerTensor(1, 0));
  EXPECT_EQ(ErrorOf([&] { Add(q, f); }),
            "add: qint8[2] is quantized; dequantize it first (float ops do not take quantized input)");
  EXPECT_EQ(ErrorOf([&] { q.To(DType::kF32); }),
            "to: cannot cast qint8[2] to f32; quantize/dequantize convert between float and quantized");
  EXPECT_EQ(ErrorOf([&] { Mean(i); }), "mean: i32[2] is not floating (cast it first)");
  EXPECT_EQ(ErrorOf([&] { IndexSelect(f, 0, f); }),
            "index_select: index must be a 1-D integer tensor, got f32[2]");
  EXPECT_EQ(ErrorOf([&] { f.data<int32_t>(); }), "data: f32[2] read as i32");
}

TEST(Errors, BadDim) {
  Tensor a = Zeros({2, 3});
  EXPECT_EQ(ErrorOf([&] { Sum(a, {2}); }), "sum: dim 2 out of range for f32[2, 3]");
  EXPECT_EQ(ErrorOf([&] { Sum(a, {1, -1}); }), "sum: dim repeated in [1, -1] for f32[2, 3]");
  EXPECT_EQ(ErrorOf([&] { a.Transpose(0, 5); }), "transpose: dim 5 out of range for f32[2, 3]");
  EXPECT_EQ(ErrorOf([&] { a.Narrow(1, 2, 2); }), "narrow: [2, 4) outside dim 1 of f32[2, 3]");
  EXPECT_EQ(ErrorOf([&] { Softmax(a, -3); }), "max: dim -3 out of range for f32[2, 3]");
  EXPECT_EQ(ErrorOf([&] { a.Permute({0, 0}); }), "permute: dim 0 repeated for f32[2, 3]");
}

TEST(Errors, BadValues) {
  Tensor x = Zeros({3, 4});
  EXPECT_EQ(ErrorOf([&] { IndexSelect(x, 1, Tensor::FromVector<int64_t>({4}, {1})); }),
            "index_select: index 4 out of range for dim 1 of size 4 (f32[3, 4])");
  EXPECT_EQ(ErrorOf([&] { Arange(0, 5, -1); }), "arange: step -1 moves away from end (start=0, end=5)");
  EXPECT_EQ(ErrorOf([&] { Max(Zeros({0})); }), "max: cannot reduce the empty dim 0 of f32[0]");
  EXPECT_EQ(ErrorOf([&] { Tensor::FromQuantized({8}, {1}, DType::kQInt4, QuantParams::PerTensor(1, 0)); }),
            "from_quantized: value 8 at index 0 outside the qint4 range [-8, 7]");
  EXPECT_EQ(ErrorOf([&] { Tensor::Empty({2}, DType::kQInt8, Device::Cpu(), QuantParams::PerTensor(0, 0)); }),
            "quantized tensor qint8[2]: scale 0 must be positive");
  EXPECT_EQ(ErrorOf([&] { Tensor::Empty({2, 3}, DType::kQInt8, Device::Cpu(),
                                        QuantParams::PerChannel({1, 1}, {0, 0}, 1)); }),
            "quantized tensor qint8[2, 3]: per-channel axis 1 needs one scale per channel, got 2");
}

TEST(Errors, Devices) {
  if (IsAvailable(Device::Cuda())) GTEST_SKIP() << "a CUDA device is present";
  std::string msg = ErrorOf([] { Zeros({2}, DType::kF32, Device::Cuda()); });
  EXPECT_EQ(msg.rfind("device cuda:0: ", 0), 0u) << msg;
}

}  // namespace
}  // namespace quanta

// The CUDA backend against the CPU backend: allocator and copies, the elementwise
// add, matmul through cuBLAS. Skips, saying why, without --config=cuda or a GPU.
#include "core/backend.h"
#include "core/ops.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    Backend* cuda = FindBackend(DeviceType::kCuda);
    if (cuda == nullptr) GTEST_SKIP() << "built without the CUDA backend (use --config=cuda)";
    std::string why = cuda->Unavailable();
    if (!why.empty()) GTEST_SKIP() << "CUDA backend unavailable: " << why;
  }
};

double MaxAbsDiff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.ToVector<double>(), y = b.ToVector<double>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

TEST_F(Cuda, CopiesRoundTrip) {
  Tensor x = Arange(0, 1000).View({10, 100});
  Tensor d = x.To(Device::Cuda());
  EXPECT_TRUE(d.device().is_cuda());
  EXPECT_EQ(d.To(Device::Cpu()).ToVector<float>(), x.ToVector<float>());
  // A strided view is packed on the device.
  Tensor t = d.Transpose(0, 1).Contiguous();
  EXPECT_EQ(t.ToVector<float>(), x.Transpose(0, 1).Contiguous().ToVector<float>());
  EXPECT_EQ(Zeros({5}, DType::kF32, Device::Cuda()).ToVector<float>(), std::vector<float>(5, 0));
}

TEST_F(Cuda, AddMatchesCpu) {
  Generator gen(3);
  Tensor a = Normal({64, 33}, 0, 1, &gen);
  Tensor b = Normal({33}, 0, 1, &gen);
  Tensor want = Add(a, b);
  Tensor got = Add(a.To(Device::Cuda()), b.To(Device::Cuda()));
  EXPECT_EQ(got.device(), Device::Cuda());
  EXPECT_EQ(MaxAbsDiff(got, want), 0.0);  // one rounding, the same on both
  Tensor acc = a.To(Device::Cuda());
  acc += b.To(Device::Cuda());
  EXPECT_EQ(MaxAbsDiff(acc, want), 0.0);
}

TEST_F(Cuda, MatmulMatchesCpu) {
  Generator gen(4);
  Tensor a = Normal({4, 65, 130}, 0, 1, &gen);
  Tensor b = Normal({130, 47}, 0, 1, &gen);
  Tensor want = Matmul(a, b);
  Tensor got = Matmul(a.To(Device::Cuda()), b.To(Device::Cuda()));
  ASSERT_EQ(got.shape(), want.shape());
  // f32 with TF32 off: both accumulate 130 products in f32.
  EXPECT_LE(MaxAbsDiff(got, want), 1e-4);
  Tensor t = Matmul(b.To(Device::Cuda()).Transpose(0, 1), a.Select(0, 0).To(Device::Cuda()).Transpose(0, 1));
  EXPECT_LE(MaxAbsDiff(t, Matmul(b.Transpose(0, 1), a.Select(0, 0).Transpose(0, 1))), 1e-4);
}

TEST_F(Cuda, UnsupportedOpSaysSo) {
  Tensor x = Zeros({2}, DType::kF32, Device::Cuda());
  try {
    Exp(x);
    FAIL() << "exp ran on the CUDA skeleton";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "exp: not supported on cuda:0 (f32[2] cuda:0)");
  }
}

}  // namespace
}  // namespace quanta

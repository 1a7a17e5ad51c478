// The numerical contract on real data: fmnist_resnet8 trained with QAT on
// Fashion-MNIST, converted, gives the fake-quant model's top-1 on at least 99.5%
// of the 10,000 test images (Note [Conversion tolerance] in convert_test.cc).
#include <cstdio>

#include "autograd/autograd.h"
#include "data/readers.h"
#include "gtest/gtest.h"
#include "models/resnet.h"
#include "nn/optim.h"
#include "quant/convert.h"
#include "quant/prepare.h"

namespace quanta::quant {
namespace {

// u8 (N, 28, 28, 1) images [begin, end) as normalized f32 (N, 1, 28, 28).
Tensor Images(const data::ImageDataset& d, int64_t begin, int64_t end) {
  Tensor x = d.images().Narrow(0, begin, end - begin).To(DType::kF32).Permute({0, 3, 1, 2});
  return Div(Sub(Div(x, 255.0), 0.2860), 0.3530);
}

Tensor Labels(const data::ImageDataset& d, int64_t begin, int64_t end) {
  std::vector<int64_t> l(d.labels().begin() + begin, d.labels().begin() + end);
  return Tensor::FromVector(l, {end - begin});
}

struct Agreement {
  double fake_quant_accuracy, integer_accuracy, same_top1;
};

// Top-1 of the fake-quant model and of its conversion over the whole test set.
Agreement Compare(nn::Layer& net, const data::ImageDataset& test, const std::string& what) {
  net.Eval();
  auto q = Convert(net);
  int64_t n = test.size(), fq_right = 0, int_right = 0, same = 0;
  NoGradGuard no_grad;
  for (int64_t start = 0; start < n; start += 500) {
    int64_t end = std::min(n, start + 500);
    Tensor x = Images(test, start, end);
    std::vector<int64_t> a = Argmax(net.Forward(x), 1).ToVector<int64_t>();
    std::vector<int64_t> b = Argmax(q->Forward(x), 1).ToVector<int64_t>();
    for (int64_t i = 0; i < end - start; ++i) {
      int64_t label = test.labels()[start + i];
      fq_right += a[i] == label;
      int_right += b[i] == label;
      same += a[i] == b[i];
    }
  }
  Agreement r{static_cast<double>(fq_right) / n, static_cast<double>(int_right) / n, static_cast<double>(same) / n};
  std::printf("%s: fake-quant top-1 %.4f, integer top-1 %.4f, same top-1 on %.4f of %lld test images\n", what.c_str(),
              r.fake_quant_accuracy, r.integer_accuracy, r.same_top1, static_cast<long long>(n));
  return r;
}

// QAT W8A8 for 100 steps of 64 images; then, from the same trained weights, W4A8
// post-training quantization (min/max ranges over 8 training batches). Both convert.
TEST(ConvertFashionMnist, IntegerModelsAgreeWithFakeQuant) {
  auto train = data::ReadFashionMnist(data::Split::kTrain);
  auto test = data::ReadFashionMnist(data::Split::kTest);
  ASSERT_TRUE(train.ok() && test.ok()) << "tools/setup.sh installs dataset-fashion-mnist";
  Generator gen(3);
  auto net = models::ResNet::Make("fmnist_resnet8", 10, &gen);
  auto policy = MixedPrecisionPolicy::Parse("default 8 8 ema");
  policy->defaults.ema_decay = 0.99;  // a short run
  PrepareQat(*net, *policy);
  nn::SGD opt(ParameterGroups(*net), {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4});
  net->Train();
  const int64_t batch = 64;
  for (int64_t start = 0; start + batch <= 6400; start += batch) {
    opt.ZeroGrad();
    Backward(CrossEntropy(net->Forward(Images(**train, start, start + batch)), Labels(**train, start, start + batch)));
    opt.Step();
  }
  Agreement w8 = Compare(*net, **test, "QAT W8A8");
  EXPECT_GT(w8.fake_quant_accuracy, 0.65) << "100 steps should learn most of it (chance: 0.1)";
  EXPECT_GE(w8.same_top1, 0.995);
  EXPECT_NEAR(w8.integer_accuracy, w8.fake_quant_accuracy, 0.005);

  auto ptq = models::ResNet::Make("fmnist_resnet8", 10, &gen);
  TensorMap weights;
  for (auto& [name, t] : net->StateDict()) {
    if (name.find("_quant.") == std::string::npos) weights[name] = t;
  }
  ASSERT_TRUE(ptq->LoadStateDict(weights).ok());
  PrepareReport r = PrepareQat(*ptq, *MixedPrecisionPolicy::Parse("default 4 8 minmax"));
  std::vector<Tensor> calibration;
  for (int b = 0; b < 8; ++b) calibration.push_back(Images(**train, b * batch, (b + 1) * batch));
  Calibrate(r, *ptq, calibration, [&](const Tensor& x) { return ptq->Forward(x); });
  Agreement w4 = Compare(*ptq, **test, "PTQ W4A8");
  EXPECT_GT(w4.fake_quant_accuracy, 0.6);
  EXPECT_GE(w4.same_top1, 0.995);
}

}  // namespace
}  // namespace quanta::quant

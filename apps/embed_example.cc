// The README's embedding example: define a model, train it with QAT, convert it
// to int8 and save it. Built and run as a test (//tests/apps:embed_example_test),
// so it cannot rot. Run: bazel run //apps:embed_example
#include <iostream>

#include "autograd/autograd.h"
#include "data/synthetic.h"
#include "nn/optim.h"
#include "quant/convert.h"
#include "quant/prepare.h"

using namespace quanta;

int main() {
  data::QuadrantTask train = data::MakeQuadrantTask(512, 1, 1.0), test = data::MakeQuadrantTask(500, 2, 1.0);
  Generator gen(0);
  auto net = std::make_shared<nn::Sequential>(  // images (N, 1, 12, 12) -> 4 classes
      std::make_shared<nn::Conv2d>(1, 8, 3, Conv2dOptions{.stride = {2, 2}, .padding = {1, 1}}, false, &gen),
      std::make_shared<nn::BatchNorm2d>(8), std::make_shared<nn::ReLU>(), std::make_shared<nn::Flatten>(),
      std::make_shared<nn::Linear>(8 * 6 * 6, 4, true, &gen));
  auto policy = quant::MixedPrecisionPolicy::Parse("default 8 8 ema\n");
  policy->defaults.ema_decay = 0.9;                          // a short run: short range memory
  quant::PrepareQat(*net, *policy);                          // fake quantization from the first step
  nn::SGD opt(quant::ParameterGroups(*net), {.lr = 0.05, .momentum = 0.9});
  for (int step = 0; step < 240; ++step) {
    int64_t at = step * 32 % 512;
    opt.ZeroGrad();
    Backward(CrossEntropy(net->Forward(train.images.Narrow(0, at, 32)), train.labels.Narrow(0, at, 32)));
    opt.Step();
  }
  net->Eval();
  auto int8 = quant::Convert(*net);                          // int8 weights, BN folded, integer kernels
  Tensor predicted = Argmax(int8->Forward(test.images), 1);
  double accuracy = Mean(Eq(predicted, test.labels).To(DType::kF32)).item<float>();
  absl::Status saved = int8->Save("/tmp/quanta_embed_example.int8.safetensors");
  std::cout << "int8 accuracy " << accuracy << ", " << int8->Bytes() << " bytes, saved: " << saved << "\n";
  return accuracy > 0.85 && saved.ok() ? 0 : 1;
}

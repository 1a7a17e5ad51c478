// Quantization benchmark: fake-quant throughput (elements/s) per tensor and per
// channel, and the QAT step time of ResNet-20 relative to the f32 step (target:
// 1.3x or less). A program, not a test. Run: bazel run //apps:bench_quant
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "autograd/autograd.h"
#include "models/resnet_cifar.h"
#include "quant/prepare.h"

ABSL_FLAG(int, threads, 2, "threads");
ABSL_FLAG(int, steps, 4, "timed ResNet-20 steps per configuration (after one warm-up step)");
ABSL_FLAG(int, batch, 128, "ResNet-20 batch");

namespace quanta {
namespace {

double MedianSeconds(int reps, const std::function<void()>& fn) {
  std::vector<double> s;
  for (int i = 0; i < reps; ++i) {
    auto start = std::chrono::steady_clock::now();
    fn();
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

double StepSeconds(const char* policy_text, int steps, int batch) {
  Generator gen(0);
  auto net = models::CifarResNet::Make(20, 100, &gen);
  std::vector<nn::ParamGroup> groups = {{net->Parameters()}};
  if (policy_text != nullptr) {
    quant::PrepareQat(*net, *quant::MixedPrecisionPolicy::Parse(policy_text));
    groups = quant::ParameterGroups(*net);
  }
  nn::SGD opt(groups, {.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4});
  Tensor images = Normal({batch, 3, 32, 32}, 0, 1, &gen);
  std::vector<int64_t> l(batch);
  for (int i = 0; i < batch; ++i) l[i] = (i * 37) % 100;
  Tensor labels = Tensor::FromVector<int64_t>(l, {batch});
  auto step = [&] {
    opt.ZeroGrad();
    Backward(CrossEntropy(net->Forward(images), labels));
    opt.Step();
  };
  step();  // warm-up: oneDNN primitives, LSQ initialization
  return MedianSeconds(steps, step);
}

}  // namespace
}  // namespace quanta

int main(int argc, char** argv) {
  using namespace quanta;
  absl::ParseCommandLine(argc, argv);
  SetNumThreads(absl::GetFlag(FLAGS_threads));
  std::printf("threads: %d\n", absl::GetFlag(FLAGS_threads));
  // Fake quantization of a (64, 256, 32, 32) activation-sized tensor: 16M floats.
  Generator gen(1);
  Tensor x = Normal({64, 256, 32, 32}, 0, 1, &gen);
  Tensor s1 = Full({1}, 0.05), z1 = Zeros({1});
  Tensor sc = Uniform({256}, 0.02, 0.08, &gen), zc = Zeros({256});
  double n = static_cast<double>(x.numel());
  double t_tensor = MedianSeconds(5, [&] { FakeQuantize(x, s1, z1, {.quant_min = -8, .quant_max = 7}); });
  double t_channel = MedianSeconds(5, [&] { FakeQuantize(x, sc, zc, {.quant_min = -8, .quant_max = 7, .axis = 1}); });
  double t_add = MedianSeconds(5, [&] { Add(x, x); });
  std::printf("fake_quantize per tensor : %.0f M elements/s\n", n / t_tensor / 1e6);
  std::printf("fake_quantize per channel: %.0f M elements/s\n", n / t_channel / 1e6);
  std::printf("(for scale: add of the same tensors %.0f M elements/s)\n", n / t_add / 1e6);
  int steps = absl::GetFlag(FLAGS_steps), batch = absl::GetFlag(FLAGS_batch);
  double f32 = StepSeconds(nullptr, steps, batch);
  std::printf("ResNet-20 batch %d step: f32 %.3f s\n", batch, f32);
  for (const char* policy : {"default 8 8 ema\n", "default 4 4 ewgs\n", "default 4 4 lsq\n"}) {
    double q = StepSeconds(policy, steps, batch);
    std::string name(policy);
    name.pop_back();
    std::printf("  QAT %-18s %.3f s  = %.2fx f32 (target <= 1.3x)\n", name.c_str(), q, q / f32);
  }
  return 0;
}

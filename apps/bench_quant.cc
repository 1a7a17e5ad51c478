// Quantization benchmark: fake-quant throughput (elements/s) per tensor and per
// channel, and the QAT step time of ResNet-20 relative to the f32 step (target,
// issue 18: 1.15x or less). A program, not a test. Run: bazel run //apps:bench_quant
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "autograd/autograd.h"
#include "backends/cpu/cpu_backend.h"
#include "core/backend.h"
#include "data/synthetic.h"
#include "models/tiny_cnn.h"
#include "models/resnet_cifar.h"
#include "quant/prepare.h"

ABSL_FLAG(int, threads, 2, "threads");
ABSL_FLAG(int, steps, 6, "timed ResNet-20 steps per configuration (after three warm-up rounds)");
ABSL_FLAG(int, batch, 128, "ResNet-20 batch");
ABSL_FLAG(bool, channels_last, true, "ResNet-20 steps on channels-last images (as bench_nn); false: NCHW");
ABSL_FLAG(bool, winograd, true,
          "oneDNN's Winograd kernels for 3x3 convolutions of 32+ channels (as bench_nn); false: direct everywhere");
ABSL_FLAG(std::vector<std::string>, qat, std::vector<std::string>({"default 8 8 ema", "default 4 4 ema", "default 4 4 ewgs", "default 4 4 lsq"}),
          "the QAT policies timed beside f32 (comma-separated; one alone for perf record)");
ABSL_FLAG(bool, compare, true, "also compare PTQ and QAT methods at W4A4 on a synthetic task");

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

// One ResNet-20 training configuration: f32 (no policy) or QAT under a policy.
struct StepConfig {
  std::string name;
  std::shared_ptr<nn::Layer> net;
  std::unique_ptr<nn::SGD> opt;
  std::vector<double> seconds;
};

// The configurations' steps interleaved (one step of each, round after round),
// so that the machine's drift over the run reaches them all alike; medians.
// Three warm-up rounds: oneDNN primitives, LSQ initialization, and the block
// cache grown to the step's working set (measured one configuration after the
// other with one warm-up step, QAT had come out cheaper than f32).
std::vector<StepConfig> StepSeconds(const std::vector<std::string>& policies, int steps, int batch) {
  std::vector<StepConfig> configs;
  for (const std::string& policy : policies) {
    Generator gen(0);
    StepConfig c{policy.empty() ? "f32" : policy, models::CifarResNet::Make(20, 100, &gen), nullptr, {}};
    std::vector<nn::ParamGroup> groups = {{c.net->Parameters()}};
    if (!policy.empty()) {
      quant::PrepareQat(*c.net, *quant::MixedPrecisionPolicy::Parse(policy + "\n"));
      groups = quant::ParameterGroups(*c.net);
    }
    c.opt = std::make_unique<nn::SGD>(groups, nn::SgdOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4});
    configs.push_back(std::move(c));
  }
  Generator gen(0);
  Tensor images = Normal({batch, 3, 32, 32}, 0, 1, &gen);
  if (absl::GetFlag(FLAGS_channels_last)) images = images.ChannelsLast();
  std::vector<int64_t> l(batch);
  for (int i = 0; i < batch; ++i) l[i] = (i * 37) % 100;
  Tensor labels = Tensor::FromVector<int64_t>(l, {batch});
  for (int round = 0; round < 3 + steps; ++round) {
    for (StepConfig& c : configs) {
      auto start = std::chrono::steady_clock::now();
      c.opt->ZeroGrad();
      Backward(CrossEntropy(c.net->Forward(images), labels));
      c.opt->Step();
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (round >= 3) c.seconds.push_back(s);
    }
  }
  for (StepConfig& c : configs) std::sort(c.seconds.begin(), c.seconds.end());
  return configs;
}

// ---- method comparison on a synthetic task (tests/quant/qat_test.cc's setup) ----
using Data = data::QuadrantTask;
Data Synthetic(int n, uint64_t seed) { return data::MakeQuadrantTask(n, seed, 1.0); }
std::shared_ptr<nn::Sequential> Cnn(uint64_t seed) { return models::TinyCnn(seed); }
void Train(nn::Sequential& net, const Data& d, int steps, double lr) {
  nn::SGD opt({{net.Parameters()}}, {.lr = lr, .momentum = 0.9});
  net.Train();
  for (int step = 0; step < steps; ++step) {
    int64_t start = (step * 32) % d.images.size(0);
    opt.ZeroGrad();
    Backward(CrossEntropy(net.Forward(d.images.Narrow(0, start, 32)), d.labels.Narrow(0, start, 32)));
    opt.Step();
  }
}
std::pair<double, double> Evaluate(nn::Sequential& net, const Data& d) {
  NoGradGuard no_grad;
  net.Eval();
  Tensor logits = net.Forward(d.images);
  net.Train();
  return {Mean(Eq(Argmax(logits, 1), d.labels).To(DType::kF32)).item<float>(), CrossEntropy(logits, d.labels).item<float>()};
}
void CompareMethods() {
  std::printf("\nW4A4 on the synthetic task (train 512, test 1000; f32 CNN trained 240 steps; mean of seeds 1, 3, 5):\n");
  std::printf("%-34s %-9s %s\n", "method", "accuracy", "test loss");
  std::vector<std::pair<std::string, std::pair<double, double>>> rows;
  auto add = [&](const std::string& name, std::pair<double, double> score) {
    for (auto& [n, s] : rows) {
      if (n == name) {
        s.first += score.first / 3;
        s.second += score.second / 3;
        return;
      }
    }
    rows.push_back({name, {score.first / 3, score.second / 3}});
  };
  for (uint64_t seed : {1, 3, 5}) {
    Data train = Synthetic(512, seed), test = Synthetic(1000, seed + 1);
    auto f32 = Cnn(7 + seed);
    Train(*f32, train, 240, 0.05);
    add("f32", Evaluate(*f32, test));
    std::vector<Tensor> calibration;
    for (int b = 0; b < 8; ++b) calibration.push_back(train.images.Narrow(0, b * 32, 32));
    for (const char* kind : {"minmax", "percentile", "mse"}) {
      auto net = Cnn(7 + seed);
      (void)net->LoadStateDict(f32->StateDict());
      auto report = quant::PrepareQat(*net, *quant::MixedPrecisionPolicy::Parse(std::string("default 4 4 ") + kind +
                                                                               "\nfirst_last_8bit off\n"));
      quant::Calibrate(report, *net, calibration, [&](const Tensor& x) { return net->Forward(x); });
      add(std::string("PTQ ") + kind, Evaluate(*net, test));
    }
    for (const char* kind : {"ema", "ewgs", "lsq"}) {
      auto net = Cnn(7 + seed);
      (void)net->LoadStateDict(f32->StateDict());
      quant::PrepareQat(*net, *quant::MixedPrecisionPolicy::Parse(std::string("default 4 4 ") + kind +
                                                                 "\nfirst_last_8bit off\n"));
      Train(*net, train, 80, 0.02);
      add(std::string("QAT ") + kind + " (80 steps from f32)", Evaluate(*net, test));
    }
  }
  for (auto& [name, s] : rows) std::printf("%-34s %-9.4f %.4f\n", name.c_str(), s.first, s.second);
}

}  // namespace
}  // namespace quanta

int main(int argc, char** argv) {
  using namespace quanta;
  absl::ParseCommandLine(argc, argv);
  SetNumThreads(absl::GetFlag(FLAGS_threads));
  GetBackend(Device::Cpu()).SetOption("winograd", absl::GetFlag(FLAGS_winograd) ? "1" : "0");
  std::printf("threads: %d\n", absl::GetFlag(FLAGS_threads));
  const size_t winograd_before = cpu::OneDnnWinogradPrimitives();
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
  std::vector<std::string> policies = {""};
  for (const std::string& p : absl::GetFlag(FLAGS_qat)) policies.push_back(p);
  std::vector<StepConfig> configs = StepSeconds(policies, steps, batch);
  auto median = [](const StepConfig& c) { return c.seconds[c.seconds.size() / 2]; };
  const double f32 = median(configs[0]);
  std::printf("ResNet-20 batch %d, %s, step: f32 %.3f s (steps interleaved with the QAT ones below; medians)\n", batch,
              absl::GetFlag(FLAGS_channels_last) ? "channels-last" : "NCHW", f32);
  for (size_t i = 1; i < configs.size(); ++i) {
    double q = median(configs[i]);
    std::printf("  QAT %-18s %.3f s  = %.2fx f32 (target <= 1.15x)\n", configs[i].name.c_str(), q, q / f32);
  }
  std::printf("convolutions: %s\n", cpu::DescribeConvolutions(winograd_before).c_str());
  if (absl::GetFlag(FLAGS_compare)) CompareMethods();
  return 0;
}

// nn benchmark: forward + backward + SGD step of ResNet-20 for CIFAR (3x32x32,
// 100 classes) at batch 128, in images per second at 1 and 2 threads, and the
// process's peak memory. A program, not a test. Run: bazel run //apps:bench_nn
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "autograd/autograd.h"
#include "backends/cpu/cpu_backend.h"
#include "core/backend.h"
#include "models/resnet_cifar.h"
#include "nn/optim.h"

ABSL_FLAG(int, batch, 128, "images per step");
ABSL_FLAG(int, steps, 6, "timed steps per thread count (after one warm-up step)");
ABSL_FLAG(int, depth, 20, "ResNet depth (6n + 2)");
ABSL_FLAG(bool, bf16, false, "run matmul and convolution under bf16 autocast");
ABSL_FLAG(bool, channels_last, true,
          "feed channels-last images, so the network runs channels-last (oneDNN's NHWC convolutions); false: NCHW");
ABSL_FLAG(bool, winograd, true,
          "oneDNN's Winograd kernels for the 3x3 convolutions of 32+ channels (Note [Winograd convolutions] in "
          "backends/cpu/onednn.cc); false: direct convolutions everywhere");

namespace quanta {
namespace {

double PeakRssMiB() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // KiB on Linux
}

}  // namespace
}  // namespace quanta

int main(int argc, char** argv) {
  using namespace quanta;
  absl::ParseCommandLine(argc, argv);
  const int batch = absl::GetFlag(FLAGS_batch), steps = absl::GetFlag(FLAGS_steps);
  GetBackend(Device::Cpu()).SetOption("winograd", absl::GetFlag(FLAGS_winograd) ? "1" : "0");
  Generator gen(0);
  auto net = models::CifarResNet::Make(absl::GetFlag(FLAGS_depth), 100, &gen);
  nn::SGD opt({{net->Parameters()}}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4});
  Tensor images = Normal({batch, 3, 32, 32}, 0, 1, &gen);
  if (absl::GetFlag(FLAGS_channels_last)) images = images.ChannelsLast();
  std::vector<int64_t> label_values(batch);
  for (int i = 0; i < batch; ++i) label_values[i] = (i * 37) % 100;
  Tensor labels = Tensor::FromVector<int64_t>(label_values, {batch});
  std::printf("ResNet-%d (CIFAR, 100 classes): %lld parameters, batch %d, %s, %s\n", absl::GetFlag(FLAGS_depth),
              static_cast<long long>(net->NumParameters()), batch, absl::GetFlag(FLAGS_bf16) ? "bf16 autocast" : "f32",
              absl::GetFlag(FLAGS_channels_last) ? "channels-last" : "NCHW");
  const size_t winograd_before = cpu::OneDnnWinogradPrimitives();
  for (int threads : {1, 2}) {
    SetNumThreads(threads);
    std::vector<double> seconds;
    float loss_value = 0;
    for (int step = 0; step <= steps; ++step) {
      auto start = std::chrono::steady_clock::now();
      opt.ZeroGrad();
      Tensor loss;
      if (absl::GetFlag(FLAGS_bf16)) {
        AutocastGuard amp(DType::kBF16);
        loss = CrossEntropy(net->Forward(images).To(DType::kF32), labels);
      } else {
        loss = CrossEntropy(net->Forward(images), labels);
      }
      Backward(loss);
      opt.Step();
      loss_value = loss.item<float>();
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (step > 0) seconds.push_back(s);  // step 0 builds primitives
    }
    std::sort(seconds.begin(), seconds.end());
    double median = seconds[seconds.size() / 2];
    std::printf("threads=%d  median step %.3f s  %.1f images/s  (min %.3f s, max %.3f s, loss %.3f)\n", threads,
                median, batch / median, seconds.front(), seconds.back(), loss_value);
  }
  std::printf("convolutions: %s\n", cpu::DescribeConvolutions(winograd_before).c_str());
  std::printf("peak memory (max RSS): %.0f MiB\n", PeakRssMiB());
  return 0;
}

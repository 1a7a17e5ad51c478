// GPU benchmark: training images/s of ResNet-20 and ResNet-18 (CIFAR stem,
// 32x32, batch 256) in f32, bf16 autocast and QAT W8A8; inference images/s of
// the converted int8 model (cuBLASLt int8) against bf16 autocast; GEMM
// TFLOP/s at 8192^3 in f32, TF32, bf16 and int8 beside the device's peak; the
// caching allocator's peak. Weights and data are random (speed does not depend
// on them). A program, not a test: prints figures, or says why it cannot run.
// Run: bazel run --config=cuda //apps:bench_gpu
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "autograd/autograd.h"
#include "core/backend.h"
#include "core/grad_mode.h"
#include "models/registry.h"
#include "nn/functional.h"
#include "nn/optim.h"
#include "quant/convert.h"
#include "quant/prepare.h"

ABSL_FLAG(int, steps, 10, "timed training steps per case (after 3 warm-up steps); the median is reported");
ABSL_FLAG(int, batch, 256, "batch size");
ABSL_FLAG(int64_t, gemm, 8192, "GEMM size (M = N = K)");
ABSL_FLAG(std::string, only, "", "train, infer or gemm: run one part");

namespace quanta {
namespace {

const Device kGpu = Device::Cuda(0);

void Sync() { GetBackend(kGpu).Synchronize(0); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds per call of `run` (synchronized), median over `runs` after `warmup`.
double Time(const std::function<void()>& run, int runs, int warmup = 3) {
  for (int i = 0; i < warmup; ++i) run();
  Sync();
  std::vector<double> s;
  for (int i = 0; i < runs; ++i) {
    auto t = std::chrono::steady_clock::now();
    run();
    Sync();
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
  }
  return Median(s);
}

// Dense peaks (no sparsity) of the GPUs these machines lend, TFLOP/s or TOP/s.
struct Peak {
  double f32, tf32, bf16, int8;
};
Peak PeakOf(const std::string& name) {
  if (absl::StrContains(name, "H200") || absl::StrContains(name, "H100")) return {67, 495, 989, 1979};  // SXM
  if (absl::StrContains(name, "A100")) return {19.5, 156, 312, 624};
  return {0, 0, 0, 0};
}
std::string OfPeak(double got, double peak) {
  return peak > 0 ? absl::StrFormat("%5.1f%% of %.0f", 100 * got / peak, peak) : std::string("peak unknown");
}

void BenchTraining(int batch, int steps) {
  std::printf("\nTraining, batch %d, 32x32x3, 100 classes, SGD momentum (images/s, median of %d steps)\n", batch, steps);
  std::printf("%-16s %12s %12s %12s %14s\n", "model", "f32", "bf16 amp", "QAT W8A8", "peak memory");
  Generator gen(1);
  Tensor images = Normal({batch, 3, 32, 32}, 0, 1, &gen).To(kGpu);
  Tensor labels = Uniform({batch}, 0, 100, &gen).To(DType::kI64).To(kGpu);
  for (const char* name : {"resnet20", "resnet18_cifar"}) {
    double ips[3];
    int64_t peak = 0;
    for (int mode = 0; mode < 3; ++mode) {
      auto net = models::Make(name, 100, 3, &gen);
      if (mode == 2) quant::PrepareQat(*net, quant::MixedPrecisionPolicy{});
      net->To(kGpu);
      net->Train();
      nn::SGD opt({{net->Parameters()}}, {.lr = 0.01, .momentum = 0.9});
      GetBackend(kGpu).ResetPeakMemory(0);
      double s = Time([&] {
        opt.ZeroGrad();
        Tensor logits;
        if (mode == 1) {
          AutocastGuard amp(DType::kBF16);
          logits = net->Forward(images).To(DType::kF32);
        } else {
          logits = net->Forward(images);
        }
        Backward(CrossEntropy(logits, labels));
        opt.Step();
      }, steps);
      ips[mode] = batch / s;
      peak = std::max(peak, GetBackend(kGpu).Memory(0).peak);
    }
    std::printf("%-16s %12.0f %12.0f %12.0f %11.0f MiB\n", name, ips[0], ips[1], ips[2], peak / 1048576.0);
  }
}

void BenchInference(int batch, int steps) {
  std::printf("\nInference, batch %d, 32x32x3 (images/s, median of %d runs)\n", batch, steps);
  std::printf("%-16s %12s %12s %12s %10s\n", "model", "f32", "bf16 amp", "int8", "int8/bf16");
  Generator gen(2);
  Tensor images = Normal({batch, 3, 32, 32}, 0, 1, &gen);
  for (const char* name : {"resnet20", "resnet18_cifar"}) {
    auto net = models::Make(name, 100, 3, &gen);
    net->Eval();
    quant::PrepareReport report = quant::PrepareQat(*net, *quant::MixedPrecisionPolicy::Parse("default 8 8 minmax\n"));
    quant::Calibrate(report, *net, {images}, [&](const Tensor& x) { return net->Forward(x); });
    auto folded = quant::ConvertFloat(*net);
    auto q = quant::Convert(*net);
    folded->MoveTo(kGpu);
    q->MoveTo(kGpu);
    Tensor x = images.To(kGpu);
    NoGradGuard no_grad;
    double f32 = batch / Time([&] { folded->Forward(x); }, steps);
    double bf16 = batch / Time([&] {
      AutocastGuard amp(DType::kBF16);
      folded->Forward(x);
    }, steps);
    double int8 = batch / Time([&] { q->Forward(x); }, steps);
    std::printf("%-16s %12.0f %12.0f %12.0f %9.2fx\n", name, f32, bf16, int8, int8 / bf16);
  }
}

void BenchGemm(int64_t n, const Peak& peak) {
  std::printf("\nGEMM %lld^3 (TFLOP/s or TOP/s, median of 5)\n", static_cast<long long>(n));
  Generator gen(3);
  Tensor a = Normal({n, n}, 0, 1, &gen, DType::kF32, kGpu), b = Normal({n, n}, 0, 1, &gen, DType::kF32, kGpu);
  double flops = 2.0 * n * n * n;
  Backend& backend = GetBackend(kGpu);
  auto report = [&](const char* what, double seconds, double p) {
    std::printf("%-28s %8.1f   %s\n", what, flops / seconds / 1e12, OfPeak(flops / seconds / 1e12, p).c_str());
  };
  backend.SetOption("tf32", "0");
  report("f32 (cuBLAS, FMA)", Time([&] { Matmul(a, b); }, 5, 1), peak.f32);
  backend.SetOption("tf32", "1");
  report("tf32 (cuBLAS tensor cores)", Time([&] { Matmul(a, b); }, 5, 1), peak.tf32);
  backend.SetOption("tf32", "0");
  Tensor a16 = a.To(DType::kBF16), b16 = b.To(DType::kBF16);
  report("bf16 (cuBLAS tensor cores)", Time([&] { Matmul(a16, b16); }, 5, 1), peak.bf16);
  Tensor qa = Quantize(a, DType::kQUInt8, QuantParams::PerTensor(0.05, 128));
  Tensor qb = Quantize(b, DType::kQInt8, QuantParams::PerTensor(0.05, 0));
  report("int8 quantized_matmul (all)", Time([&] { QuantizedMatmul(qa, qb); }, 5, 1), peak.int8);
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  Backend* cuda = FindBackend(DeviceType::kCuda);
  if (cuda == nullptr) {
    std::printf("bench_gpu: this build has no CUDA backend; build with --config=cuda\n");
    return 0;
  }
  std::string why = cuda->Unavailable();
  if (!why.empty()) {
    std::printf("bench_gpu: no GPU to measure (%s)\n", why.c_str());
    return 0;
  }
  std::string device = cuda->DeviceName(0);
  std::printf("device: %s\n", device.c_str());
  std::string only = absl::GetFlag(FLAGS_only);
  int batch = absl::GetFlag(FLAGS_batch), steps = absl::GetFlag(FLAGS_steps);
  if (only.empty() || only == "gemm") BenchGemm(absl::GetFlag(FLAGS_gemm), PeakOf(device));
  if (only.empty() || only == "train") BenchTraining(batch, steps);
  if (only.empty() || only == "infer") BenchInference(batch, steps);
  MemoryStats m = cuda->Memory(0);
  std::printf("\ncaching allocator: %.0f MiB peak, %.0f MiB cached, %lld cudaMalloc calls\n", m.peak / 1048576.0,
              m.cached / 1048576.0, static_cast<long long>(m.device_allocations));
  return 0;
}

}  // namespace
}  // namespace quanta

int main(int argc, char** argv) { return quanta::Main(argc, argv); }

// Inference benchmark: f32 (the nn model in eval, as trained: batch norm and ReLU
// as separate ops; and "folded", quant::ConvertFloat: batch norm folded into the
// weights, the fair float baseline) against the converted integer
// models, int8 (W8A8) and int4 (W4A8: 4-bit weights, 8-bit activations), for
// ResNet-20 (CIFAR, 32x32, batch 64 and 1) and ResNet-50 (224x224, batch 1), at 1
// and 2 threads: median latency, images/s, model bytes, and the int8/f32 ratio;
// then the 1024^3 GEMM in f32 and int8. Weights are random (speed does not depend
// on their values); activation ranges come from one calibration batch. Each
// int8 figure is also given as GOP/s beside the int8 1024^3 GEMM's rate at the
// same thread count (the machine's practical int8 limit).
// A program, not a test. Run: bazel run //apps:bench_infer
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/grad_mode.h"
#include "models/resnet.h"
#include "models/resnet_cifar.h"
#include "quant/convert.h"
#include "quant/prepare.h"

ABSL_FLAG(int, runs, 7, "timed runs per case (after one warm-up run); the median is reported");
ABSL_FLAG(bool, skip_resnet50, false, "leave out ResNet-50 (224x224), the slow case");
ABSL_FLAG(std::string, profile, "",
          "run only this model variant (f32, folded, int8 or int4), at --threads, --runs times, and print its median: "
          "for perf record");
ABSL_FLAG(int, threads, 1, "threads for --profile");
ABSL_FLAG(int, abits, 8,
          "activation bits of the int8 and int4 models: 7 is PyTorch x86's reduce_range, with which a CPU without "
          "VNNI runs int8 weights whole (Note [Exact integers without VNNI] in backends/cpu/onednn.cc)");
ABSL_FLAG(std::string, int8_implementation, "rule",
          "which of oneDNN's int8 convolution implementations run: rule (the default), first (oneDNN's own "
          "choice) or a name prefix such as jit_int8 or brgconv (Note [int8 convolution implementations] in "
          "backends/cpu/onednn.cc)");
ABSL_FLAG(std::string, only, "", "run only this case (resnet20_b64, resnet20_b1, resnet50 or gemm); for profiling and tools/compare_torch.py");

namespace quanta {
namespace {

double MedianSeconds(const std::function<void()>& run, int runs) {
  run();  // warm-up: builds and caches primitives and reordered weights
  std::vector<double> s;
  for (int i = 0; i < runs; ++i) {
    auto start = std::chrono::steady_clock::now();
    run();
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

// The int8 1024^3 GEMM's rate (GOP/s, 2 ops a multiply-add) at the current
// thread count: what oneDNN's VNNI kernels reach on a large, easy problem, the
// limit an int8 model's figure is compared with.
double Int8GemmGops(int runs) {
  Generator gen(2);
  const int64_t n = 1024;
  Tensor aq = Quantize(Normal({n, n}, 0, 1, &gen), DType::kQUInt8, QuantParams::PerTensor(8.0 / 255, 128));
  Tensor bq = Quantize(Normal({n, n}, 0, 1, &gen), DType::kQInt8, QuantParams::PerTensor(4.0 / 127, 0));
  bq.storage()->MarkConstant();
  return 2.0 * n * n * n / MedianSeconds([&] { QuantizedMatmul(aq, bq); }, runs) / 1e9;
}

std::shared_ptr<quant::IntegerModel> Converted(const std::function<std::shared_ptr<nn::Layer>()>& make,
                                               const std::string& policy, const Tensor& calibration) {
  auto net = make();
  quant::PrepareReport r = quant::PrepareQat(*net, *quant::MixedPrecisionPolicy::Parse(policy));
  quant::Calibrate(r, *net, {calibration}, [&](const Tensor& x) { return net->Forward(x); });
  return quant::Convert(*net);
}

void BenchModel(const std::string& title, const std::function<std::shared_ptr<nn::Layer>()>& make, const Shape& input,
                int runs) {
  Generator gen(1);
  Tensor x = Normal(input, 0, 1, &gen);
  auto f32 = make();
  f32->Eval();
  auto model = make();
  model->Eval();
  auto folded = quant::ConvertFloat(*model);
  const int abits = absl::GetFlag(FLAGS_abits);
  QUANTA_CHECK(abits >= 2 && abits <= 8, "bench_infer: --abits=", abits, ": expected 2 to 8");
  auto int8 = Converted(make, absl::StrCat("default 8 ", abits, " ema\n"), x);
  auto int4 = Converted(make, absl::StrCat("default 4 ", abits, " ema\n"), x);  // first and last layers stay 8-bit
  int64_t f32_bytes = 4 * f32->NumParameters();  // the trained model's parameters
  std::printf("\n%s, input %s: parameters %lld\n", title.c_str(), ShapeToString(input).c_str(),
              static_cast<long long>(f32->NumParameters()));
  std::printf("  model bytes: f32 %lld (%.2f MiB) | int8 %lld (%.2f MiB, %.2fx smaller) | int4 %lld (%.2f MiB, %.2fx smaller)\n",
              static_cast<long long>(f32_bytes), f32_bytes / 1048576.0, static_cast<long long>(int8->Bytes()),
              int8->Bytes() / 1048576.0, static_cast<double>(f32_bytes) / int8->Bytes(),
              static_cast<long long>(int4->Bytes()), int4->Bytes() / 1048576.0,
              static_cast<double>(f32_bytes) / int4->Bytes());
  const int64_t macs = int8->MultiplyAdds(input);
  NoGradGuard no_grad;
  if (std::string variant = absl::GetFlag(FLAGS_profile); !variant.empty()) {
    std::function<void()> run;
    if (variant == "f32") run = [&] { f32->Forward(x); };
    if (variant == "folded") run = [&] { folded->Forward(x); };
    if (variant == "int8") run = [&] { int8->Forward(x); };
    if (variant == "int4") run = [&] { int4->Forward(x); };
    QUANTA_CHECK(run != nullptr, "bench_infer: --profile=", variant, ": expected f32, folded, int8 or int4");
    SetNumThreads(absl::GetFlag(FLAGS_threads));
    std::printf("  %s, %d thread(s): %.3f ms (median of %d)\n", variant.c_str(), absl::GetFlag(FLAGS_threads),
                1e3 * MedianSeconds(run, runs), runs);
    return;
  }
  for (int threads : {1, 2}) {
    SetNumThreads(threads);
    double t_f32 = MedianSeconds([&] { f32->Forward(x); }, runs);
    double t_folded = MedianSeconds([&] { folded->Forward(x); }, runs);
    double t_int8 = MedianSeconds([&] { int8->Forward(x); }, runs);
    double t_int4 = MedianSeconds([&] { int4->Forward(x); }, runs);
    double n = static_cast<double>(input[0]);
    std::printf("  threads=%d  f32 %7.2f ms %7.1f img/s | f32 folded %7.2f ms %7.1f img/s | int8 %7.2f ms %7.1f img/s | "
                "int4 %7.2f ms %7.1f img/s\n",
                threads, 1e3 * t_f32, n / t_f32, 1e3 * t_folded, n / t_folded, 1e3 * t_int8, n / t_int8, 1e3 * t_int4,
                n / t_int4);
    std::printf("             int8 vs f32 %.2fx, vs f32 folded %.2fx | int4 vs f32 folded %.2fx\n", t_f32 / t_int8,
                t_folded / t_int8, t_folded / t_int4);
    double gops = 2.0 * macs / t_int8 / 1e9, limit = Int8GemmGops(runs);
    std::printf("             int8 %.1f GOP/s (%.1f M multiply-adds an image) = %.0f%% of the int8 1024^3 GEMM's %.1f GOP/s\n",
                gops, macs / 1e6 / n, 100 * gops / limit, limit);
  }
}

void BenchGemm(int runs) {
  Generator gen(2);
  const int64_t n = 1024;
  Tensor a = Normal({n, n}, 0, 1, &gen), b = Normal({n, n}, 0, 1, &gen);
  Tensor aq = Quantize(a, DType::kQUInt8, QuantParams::PerTensor(8.0 / 255, 128));
  Tensor bq = Quantize(b, DType::kQInt8, QuantParams::PerTensor(4.0 / 127, 0));
  bq.storage()->MarkConstant();  // a converted layer's weights
  std::printf("\nGEMM %lld^3:\n", static_cast<long long>(n));
  for (int threads : {1, 2}) {
    SetNumThreads(threads);
    double tf = MedianSeconds([&] { Matmul(a, b); }, runs);
    double tq = MedianSeconds([&] { QuantizedMatmul(aq, bq); }, runs);
    double ops = 2.0 * n * n * n;
    std::printf("  threads=%d  f32 %.1f GFLOP/s | int8 %.1f GOP/s | int8/f32 %.2fx\n", threads, ops / tf / 1e9,
                ops / tq / 1e9, tf / tq);
  }
}

}  // namespace
}  // namespace quanta

int main(int argc, char** argv) {
  using namespace quanta;
  absl::ParseCommandLine(argc, argv);
  const int runs = absl::GetFlag(FLAGS_runs);
  GetBackend(Device::Cpu()).SetOption("int8_implementation", absl::GetFlag(FLAGS_int8_implementation));
  auto resnet20 = [] {
    Generator gen(0);
    return std::shared_ptr<nn::Layer>(models::CifarResNet::Make(20, 100, &gen));
  };
  const std::string only = absl::GetFlag(FLAGS_only);
  if (!only.empty() && only != "resnet20_b64" && only != "resnet20_b1" && only != "resnet50" && only != "gemm") {
    std::fprintf(stderr, "bench_infer: --only=%s: expected resnet20_b64, resnet20_b1, resnet50 or gemm\n", only.c_str());
    return 2;
  }
  if (only.empty() || only == "resnet20_b64") BenchModel("ResNet-20 (CIFAR-100), batch 64", resnet20, {64, 3, 32, 32}, runs);
  if (only.empty() || only == "resnet20_b1") BenchModel("ResNet-20 (CIFAR-100), batch 1", resnet20, {1, 3, 32, 32}, runs);
  if ((only.empty() && !absl::GetFlag(FLAGS_skip_resnet50)) || only == "resnet50") {
    BenchModel("ResNet-50 (ImageNet), batch 1", [] {
      Generator gen(0);
      return std::shared_ptr<nn::Layer>(models::ResNet::Make("resnet50", 1000, &gen));
    }, {1, 3, 224, 224}, runs);
  }
  if (only.empty() || only == "gemm") BenchGemm(runs);
  return 0;
}

// BERT latency (BERT-base by default; --config=minilm is all-MiniLM-L6-v2's
// shape): f32 against int8 (every Linear an int8 GEMM with static
// activation ranges from one calibration batch, GELU fused into the FFN's first
// GEMM; LayerNorm and softmax in f32) and against dynamic int8 (each batch's own
// ranges, no calibration), sequence 128, batch 1 and 8, at 1 and 2 threads; random weights unless
// --checkpoint names a Hugging Face safetensors file. A program, not a test.
// Run: bazel run //apps:bench_bert
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/grad_mode.h"
#include "models/bert.h"
#include "quant/prepare.h"

ABSL_FLAG(int, runs, 5, "timed runs per case (after one warm-up); the median is reported");
ABSL_FLAG(std::string, checkpoint, "", "a Hugging Face BERT sequence classifier (safetensors) of --config's shape (random weights otherwise)");
ABSL_FLAG(std::string, config, "base", "tiny, mini, small, base or minilm (all-MiniLM-L6-v2)");
ABSL_FLAG(int64_t, seq, 128, "sequence length");
ABSL_FLAG(std::string, only, "", "int8, dynamic or f32: time one model alone (for a profiler), batch --batch at --threads");
ABSL_FLAG(int64_t, batch, 8, "with --only: batch");
ABSL_FLAG(int, threads, 1, "with --only: compute threads");
ABSL_FLAG(int, abits, 8,
          "activation bits of both int8 models (static ranges and dynamic): 8, or 7 as PyTorch's dynamic Linear "
          "(reduce_range), which CPUs without VNNI run without splitting weights");

namespace quanta {
namespace {

double Median(const std::function<void()>& run, int runs) {
  run();
  std::vector<double> s;
  for (int i = 0; i < runs; ++i) {
    auto t = std::chrono::steady_clock::now();
    run();
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  int runs = absl::GetFlag(FLAGS_runs);
  int64_t T = absl::GetFlag(FLAGS_seq);
  models::BertConfig config = models::BertConfig::Named(absl::GetFlag(FLAGS_config));
  Generator gen(0);
  auto f32 = std::make_shared<models::BertForSequenceClassification>(config, 2, &gen);
  auto q = std::make_shared<models::BertForSequenceClassification>(config, 2, &gen);
  auto dyn = std::make_shared<models::BertForSequenceClassification>(config, 2, &gen);  // dynamic int8, no calibration
  if (!absl::GetFlag(FLAGS_checkpoint).empty()) {
    auto st = models::LoadHuggingFace(absl::GetFlag(FLAGS_checkpoint), *f32);
    if (!st.ok()) {
      std::fprintf(stderr, "bench_bert: %s\n", std::string(st.status().message()).c_str());
      return 1;
    }
  }
  if (!q->LoadStateDict(f32->StateDict()).ok() || !dyn->LoadStateDict(f32->StateDict()).ok()) return 1;
  f32->Eval();
  q->Eval();
  dyn->Eval();
  auto ids = [&](int64_t B) { return Uniform({B, T}, 1000, 29000, &gen).To(DType::kI64); };
  const int abits = absl::GetFlag(FLAGS_abits);
  if (abits < 2 || abits > 8) {
    std::fprintf(stderr, "bench_bert: --abits=%d: expected 2 to 8\n", abits);
    return 1;
  }
  quant::PrepareReport report =
      quant::PrepareQat(*q, *quant::MixedPrecisionPolicy::Parse(absl::StrCat("default 8 ", abits, " minmax\n")));
  Tensor calib = ids(8);
  quant::Calibrate(report, *q, {calib}, [&](const Tensor& x) { return q->Forward({x, Tensor(), Tensor()}); });
  q->ToInteger({.dynamic = false});
  dyn->ToInteger({.dynamic = true, .dynamic_bits = abits});
  NoGradGuard no_grad;
  if (const std::string only = absl::GetFlag(FLAGS_only); !only.empty()) {
    SetNumThreads(absl::GetFlag(FLAGS_threads));
    auto& net = only == "int8" ? q : only == "dynamic" ? dyn : f32;
    Tensor x = ids(absl::GetFlag(FLAGS_batch));
    Tensor mask = OnesLike(x);
    double s = Median([&] { net->Forward({x, Tensor(), mask}); }, runs);
    std::printf("%s batch %lld, %d threads: %.1f ms\n", only.c_str(), static_cast<long long>(x.size(0)),
                absl::GetFlag(FLAGS_threads), s * 1e3);
    return 0;
  }
  std::printf("BERT-%s, sequence %lld, %s weights, int8 with %d-bit activations (median of %d)\n",
              absl::GetFlag(FLAGS_config).c_str(), static_cast<long long>(T),
              absl::GetFlag(FLAGS_checkpoint).empty() ? "random" : "checkpoint", abits, runs);
  std::printf("%-6s %-8s %10s %10s %8s %14s %8s\n", "batch", "threads", "f32 ms", "int8 ms", "speedup", "dyn int8 ms",
              "speedup");
  for (int64_t B : {1, 8}) {
    Tensor x = ids(B);
    Tensor mask = OnesLike(x);  // as a tokenizer returns it: the padding mask is applied
    for (int threads : {1, 2}) {
      SetNumThreads(threads);
      double a = Median([&] { f32->Forward({x, Tensor(), mask}); }, runs);
      double b = Median([&] { q->Forward({x, Tensor(), mask}); }, runs);
      double d = Median([&] { dyn->Forward({x, Tensor(), mask}); }, runs);
      std::printf("%-6lld %-8d %10.1f %10.1f %7.2fx %14.1f %7.2fx\n", static_cast<long long>(B), threads, a * 1e3,
                  b * 1e3, a / b, d * 1e3, a / d);
    }
  }
  return 0;
}

}  // namespace
}  // namespace quanta

int main(int argc, char** argv) { return quanta::Main(argc, argv); }

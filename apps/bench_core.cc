// Core benchmark: f32 matmul 1024^3 in GFLOP/s at 1 and 2 threads beside this
// CPU's peak, the int8 multiply-accumulate peak (measured), and elementwise add
// of 16M floats in GB/s. Not a test: it asserts nothing, it prints figures.
// Run: bazel run //apps:bench_core
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "core/generator.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "nn/functional.h"

namespace quanta {
namespace {

struct CpuPeak {
  int cores;
  double ghz;
  int flops_per_cycle;  // f32 FLOP per cycle per core: lanes x 2 (FMA) x FMA units
  std::string how;
  double gflops() const { return cores * ghz * flops_per_cycle; }
};

// The core clock, measured: a chain of 200 dependent integer adds per loop trip
// takes 200 cycles on every x86 core since the Pentium 4, whatever the nominal
// frequency /proc/cpuinfo reports inside a VM (it shows the TSC, not the boost).
double MeasureClockGhz() {
  const int64_t trips = 20'000'000;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto start = std::chrono::steady_clock::now();
    int64_t x = 0;
    __asm__ volatile(
        "mov %1, %%rcx\n"
        "1:\n"
        ".rept 200\n"
        "add $1, %0\n"
        ".endr\n"
        "dec %%rcx\n"
        "jnz 1b\n"
        : "+r"(x)
        : "r"(trips)
        : "rcx", "cc");
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, trips * 200.0 / secs / 1e9);
  }
  return best;
}

CpuPeak ComputePeak() {
  CpuPeak p;
  p.cores = static_cast<int>(std::thread::hardware_concurrency());
  p.ghz = MeasureClockGhz();
  __builtin_cpu_init();
  unsigned eax, ebx, ecx, edx;
  __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
  int family = ((eax >> 8) & 0xF) + ((eax >> 20) & 0xFF);
  bool amd = __builtin_cpu_is("amd");
  if (__builtin_cpu_supports("avx512f")) {
    // Zen 4 (family 0x19) runs a 512-bit FMA as two 256-bit halves; Zen 5 (0x1A)
    // and Intel server cores have two full 512-bit FMA pipes.
    int units = amd && family == 0x19 ? 1 : 2;
    p.flops_per_cycle = 16 * 2 * units;
    p.how = "AVX-512, " + std::to_string(units) + " FMA unit(s) x 16 lanes x 2";
  } else if (__builtin_cpu_supports("avx2")) {
    p.flops_per_cycle = 8 * 2 * 2;
    p.how = "AVX2, 2 FMA units x 8 lanes x 2";
  } else {
    p.flops_per_cycle = 4 * 2;
    p.how = "SSE, no FMA";
  }
  p.how += ", clock measured by a dependent-add chain, family 0x" + [&] {
    char b[8];
    std::snprintf(b, sizeof b, "%X", family);
    return std::string(b);
  }();
  return p;
}

const CpuPeak& Peak() {
  static const CpuPeak peak = ComputePeak();
  return peak;
}

void BM_MatmulF32_1024(benchmark::State& state) {
  int threads = static_cast<int>(state.range(0));
  SetNumThreads(threads);
  Generator gen(0);
  Tensor a = Uniform({1024, 1024}, -1, 1, &gen);
  Tensor b = Uniform({1024, 1024}, -1, 1, &gen);
  Tensor y = Tensor::Empty({1024, 1024});
  Tensor in[2] = {a, b};
  Dispatch(Op::kMatmul, in, {&y, 1});  // build and cache the primitive
  for (auto _ : state) {
    Dispatch(Op::kMatmul, in, {&y, 1});
    benchmark::ClobberMemory();
  }
  double flops = 2.0 * 1024 * 1024 * 1024;
  state.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
  double peak = Peak().gflops() / Peak().cores * threads;
  state.counters["peak_GFLOP/s"] = peak;
  state.SetLabel(std::to_string(threads) + " thread(s)");
}
BENCHMARK(BM_MatmulF32_1024)->Arg(1)->Arg(2)->UseRealTime()->MinTime(2.0);

// The int8 multiply-accumulate peak, measured rather than computed from tables:
// each thread runs 12 independent chains of vpdpbusd on 512-bit registers (64
// u8 x s8 products an instruction), enough to hide its latency, so the rate is
// the VNNI units' throughput at the clock the core holds under this load (the
// Zen 4 here: about 3.6 G instructions/s a core). The ceiling for every integer
// convolution and matmul here, which compare_torch.py sets the int8 models'
// multiply-accumulates per second against. On AVX2 without VNNI (a Zen 3), the
// three-instruction sequence oneDNN's kernels use there; 0 without either.
// Runs `chains(trips)` (one thread's independent multiply-accumulate chains;
// it returns a value that keeps them from being folded) on `threads` threads
// at once: the rate the slowest reached, in G multiply-accumulates a second.
template <typename Chains>
double ChainsGmacs(int threads, int64_t trips, double macs_per_trip, Chains chains) {
  std::vector<double> seconds(threads);
  std::vector<int> sink(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      auto start = std::chrono::steady_clock::now();
      sink[t] = chains(trips);
      seconds[t] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    });
  }
  for (std::thread& th : pool) th.join();
  benchmark::DoNotOptimize(sink);
  return threads * macs_per_trip * trips / *std::max_element(seconds.begin(), seconds.end()) / 1e9;
}

#if defined(__AVX2__)
// 12 independent chains acc[i] += mac(a, b_of(i)) in 32-bit lanes, `trips`
// times; each chain has its own b, so no two compute the same product, and a
// is renewed each trip, so nothing leaves the loop. Returns a value that keeps
// the chains from being folded.
template <typename B, typename Mac>
int Avx2Chains(int64_t trips, __m256i a, B b_of, Mac mac) {
  __m256i acc[12], b[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_epi32(i), b[i] = b_of(i);
  for (int64_t k = 0; k < trips; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_add_epi32(acc[i], mac(a, b[i]));
    __asm__ volatile("" : "+x"(a));
  }
  int s = 0;
  for (int i = 0; i < 12; ++i) s += _mm256_extract_epi32(acc[i], 0);
  return s;
}
#endif

double Int8PeakGmacs(int threads) {
#if defined(__AVX512VNNI__)
  return ChainsGmacs(threads, 50'000'000, 12.0 * 64, [](int64_t trips) {
    __m512i acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
    __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
    for (int64_t k = 0; k < trips; ++k) {
#pragma GCC unroll 12
      for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
      __asm__ volatile("" : "+v"(a));  // keeps the loop from being folded
    }
    alignas(64) int32_t lanes[16];
    int s = 0;
    for (int i = 0; i < 12; ++i) {
      _mm512_store_si512(lanes, acc[i]);
      s += lanes[0];
    }
    return s;
  });
#elif defined(__AVX2__)
  // Without VNNI an int8 multiply-accumulate takes three instructions, as
  // oneDNN's AVX2 kernels issue them: vpmaddubsw (pairs of u8 x s8 products
  // into saturating s16), vpmaddwd by ones (pairs of those into s32), vpaddd.
  const __m256i ones = _mm256_set1_epi16(1);
  return ChainsGmacs(threads, 25'000'000, 12.0 * 32, [&](int64_t trips) {
    return Avx2Chains(trips, _mm256_set1_epi8(1), [](int i) { return _mm256_set1_epi8(static_cast<char>(i + 1)); },
                      [&](__m256i a, __m256i b) { return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones); });
  });
#else
  (void)threads;
  return 0;
#endif
}

// Without VNNI the sequence above is not exact at 8 bits: a pair of products
// reaches 2 * 255 * 127 and saturates its int16. Exact u8 x s8 takes either
// that sequence twice (Note [Exact integers without VNNI]: weights in two
// halves, half the rate above) or both operands widened to 16 bits and
// multiplied by vpmaddwd alone (16 products an instruction, pairs exact in
// int32), measured here: the larger of the two is the rate an exact kernel can
// reach on this CPU. 0 where VNNI is present (vpdpbusd is exact) or AVX2 absent.
double Int8ExactPeakGmacs(int threads) {
#if !defined(__AVX512VNNI__) && defined(__AVX2__)
  return ChainsGmacs(threads, 25'000'000, 12.0 * 16, [](int64_t trips) {
    return Avx2Chains(trips, _mm256_set1_epi16(1), [](int i) { return _mm256_set1_epi16(static_cast<int16_t>(i + 1)); },
                      [](__m256i a, __m256i b) { return _mm256_madd_epi16(a, b); });
  });
#else
  (void)threads;
  return 0;
#endif
}

void BM_Int8Peak(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  double gmacs = 0;
  for (auto _ : state) gmacs = Int8PeakGmacs(threads);
  state.counters["GMAC/s"] = gmacs;
#if defined(__AVX512VNNI__)
  const char* how = ", vpdpbusd zmm";
#elif defined(__AVX2__)
  const char* how = ", vpmaddubsw + vpmaddwd + vpaddd ymm (no VNNI)";
#else
  const char* how = " (neither AVX512-VNNI nor AVX2)";
#endif
  state.SetLabel(std::to_string(threads) + " thread(s)" + how);
}
BENCHMARK(BM_Int8Peak)->Arg(1)->Arg(2)->Iterations(3)->UseRealTime();

#if !defined(__AVX512VNNI__) && defined(__AVX2__)
void BM_Int8ExactPeak(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  double gmacs = 0;
  for (auto _ : state) gmacs = Int8ExactPeakGmacs(threads);
  state.counters["GMAC/s"] = gmacs;
  state.SetLabel(std::to_string(threads) + " thread(s), vpmaddwd + vpaddd ymm on 16-bit operands (exact, no VNNI)");
}
BENCHMARK(BM_Int8ExactPeak)->Arg(1)->Arg(2)->Iterations(3)->UseRealTime();
#endif

// u8 x s8 -> f32 through oneDNN's int8 matmul (VNNI): what converted models run.
void BM_MatmulInt8_1024(benchmark::State& state) {
  int threads = static_cast<int>(state.range(0));
  SetNumThreads(threads);
  Generator gen(0);
  std::vector<double> scales(1024, 0.01);
  Tensor a = Quantize(Uniform({1024, 1024}, 0, 2, &gen), DType::kQUInt8, QuantParams::PerTensor(2.0 / 255, 0));
  Tensor b = Quantize(Uniform({1024, 1024}, -1, 1, &gen), DType::kQInt8,
                      QuantParams::PerChannel(scales, std::vector<int64_t>(1024, 0), 1));
  QuantizedMatmul(a, b);  // build and cache the primitive
  for (auto _ : state) {
    benchmark::DoNotOptimize(QuantizedMatmul(a, b));
  }
  double ops = 2.0 * 1024 * 1024 * 1024;
  state.counters["GOP/s"] = benchmark::Counter(ops, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
  state.SetLabel(std::to_string(threads) + " thread(s)");
}
BENCHMARK(BM_MatmulInt8_1024)->Arg(1)->Arg(2)->UseRealTime()->MinTime(2.0);

void BM_AddF32_16M(benchmark::State& state) {
  int threads = static_cast<int>(state.range(0));
  SetNumThreads(threads);
  const int64_t n = 16 << 20;
  Tensor a = Ones({n}), b = Ones({n}), y = Tensor::Empty({n});
  Tensor in[2] = {a, b};
  for (auto _ : state) {
    Dispatch(Op::kAdd, in, {&y, 1});
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(3.0 * n * sizeof(float), benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
  state.SetLabel(std::to_string(threads) + " thread(s)");
}
BENCHMARK(BM_AddF32_16M)->Arg(1)->Arg(2)->UseRealTime()->MinTime(2.0);

// Block quantization (issue 21) of a 4096 x 256 f32 matrix along its rows, the
// way a block-format layer quantizes its activations each forward: encode
// (BlockQuantize: each block's maximum, its scale, the codes) and decode
// (BlockDequantize), one thread. Arg: 0 MXFP8 (E4M3), 1 MXFP4, 2 NVFP4. Melem/s
// counts the matrix's elements; GB/s its f32 read once and written once.
void BM_BlockFakeQuantize(benchmark::State& state) {
  SetNumThreads(1);
  Generator gen(5);
  Tensor x = Normal({4096, 256}, 0, 1, &gen);
  const BlockFormat formats[] = {BlockFormat::Mx(DType::kF8E4M3), BlockFormat::Mx(DType::kF4E2M1), BlockFormat::Nvfp4()};
  const char* names[] = {"mxfp8", "mxfp4", "nvfp4"};
  const BlockFormat& f = formats[state.range(0)];
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(BlockFakeQuantize(x, f));
  const double n = static_cast<double>(x.numel());
  state.counters["Melem/s"] = benchmark::Counter(n / 1e6, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] = benchmark::Counter(8 * n, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
  state.SetLabel(std::string(names[state.range(0)]) + ", 1 thread");
}
BENCHMARK(BM_BlockFakeQuantize)->Arg(0)->Arg(1)->Arg(2)->UseRealTime()->MinTime(1.0);

// ResNet-50's stem pool (3x3, stride 2, padding 1 over 1x64x112x112) as an
// integer model runs it: channels-last, in inference (no argmax kept). Arg 0:
// quint8 (the integer model), 1: f32. GB/s counts the input read once and the
// output written once.
void BM_MaxPoolStem(benchmark::State& state) {
  SetNumThreads(1);
  Generator gen(3);
  Tensor x = Uniform({1, 112, 112, 64}, -1, 1, &gen);  // NHWC in memory
  if (state.range(0) == 0) x = Quantize(x, DType::kQUInt8, QuantParams::PerTensor(2.0 / 255, 128));
  x = x.Permute({0, 3, 1, 2});
  Pool2dOptions o{.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}};
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(MaxPool2d(x, o));
  double bytes = StorageBytes(x.dtype(), x.numel() + x.numel() / 4);
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.SetLabel(state.range(0) == 0 ? "quint8, 1 thread" : "f32, 1 thread");
}
BENCHMARK(BM_MaxPoolStem)->Arg(0)->Arg(1)->UseRealTime()->MinTime(1.0);

// Issue 18's layout question: elementwise add and ReLU backward on ResNet-20's
// first-stage activation (128, 16, 32, 32), contiguous (Arg 0) or channels-last
// (Arg 1), and batch norm's fused forward on it (which takes a contiguous copy
// of a channels-last input). 1 thread.
void BM_LayoutAdd(benchmark::State& state) {
  SetNumThreads(1);
  Generator gen(4);
  Tensor a = Normal({128, 16, 32, 32}, 0, 1, &gen), b = Normal({128, 16, 32, 32}, 0, 1, &gen);
  if (state.range(0)) a = a.ChannelsLast(), b = b.ChannelsLast();
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(Add(a, b));
  state.SetLabel(state.range(0) ? "channels-last" : "contiguous");
}
BENCHMARK(BM_LayoutAdd)->Arg(0)->Arg(1)->UseRealTime()->MinTime(1.0);

void BM_LayoutBatchNorm(benchmark::State& state) {
  SetNumThreads(1);
  Generator gen(4);
  Tensor a = Normal({128, 16, 32, 32}, 0, 1, &gen);
  if (state.range(0)) a = a.ChannelsLast();
  Tensor w = Ones({16}), b = Zeros({16});
  NoGradGuard no_grad;
  for (auto _ : state) benchmark::DoNotOptimize(BatchNormTraining(a, w, b, 1e-5)[0]);
  state.SetLabel(state.range(0) ? "channels-last" : "contiguous");
}
BENCHMARK(BM_LayoutBatchNorm)->Arg(0)->Arg(1)->UseRealTime()->MinTime(1.0);

// Batch norm in training as ResNet-20 runs it (channels-last, f32, 1 thread):
// the fused forward and backward (Note [Fused batch norm]) on each stage's
// activation. Arg 0: the stage (0: 128x16x32x32, 1: 128x32x16x16, 2:
// 128x64x8x8); Arg 1: 0 the forward plain, 1 the forward with the block's
// epilogue (relu(bn(x) + residual)), 2 the backward plain, 3 the backward of
// the epilogue form (which also writes the residual's gradient). GB/s counts
// each activation-sized tensor the call reads or writes once (forward: x, y
// and the residual; backward: grad_y, x, grad_x, and the residual and its
// gradient), the traffic of a kernel that made one pass. The calls repeat on
// the same tensors (2 to 8 MiB), which stay in L3: this measures the kernels'
// own work, where a training step's backward reads activations saved long
// before from memory (docs/benchmarks.md), and a rate above BM_AddF32_16M's
// (64 MiB tensors, streamed from memory) is possible.
void BM_BatchNormChannelsLast(benchmark::State& state) {
  SetNumThreads(1);
  const int64_t stage = state.range(0), pass = state.range(1);
  const int64_t C = 16 << stage, HW = 32 >> stage;
  Generator gen(6);
  Tensor x = Normal({128, C, HW, HW}, 0.5, 2, &gen).ChannelsLast();
  Tensor r = Normal({128, C, HW, HW}, 0, 1, &gen).ChannelsLast();
  Tensor gy = Normal({128, C, HW, HW}, 0, 1, &gen).ChannelsLast();
  Tensor w = Uniform({C}, 0.5, 1.5, &gen), b = Uniform({C}, -0.2, 0.2, &gen);
  const bool epilogue = pass == 1 || pass == 3;
  NoGradGuard no_grad;
  auto [y, mean, var] = BatchNormTraining(x, w, b, 1e-5);
  for (auto _ : state) {
    if (pass == 0) benchmark::DoNotOptimize(BatchNormTraining(x, w, b, 1e-5)[0]);
    if (pass == 1) benchmark::DoNotOptimize(BatchNormTraining(x, w, b, 1e-5, r, true)[0]);
    if (pass == 2) benchmark::DoNotOptimize(BatchNormBackward(gy, x, w, mean, var, 1e-5)[0]);
    if (pass == 3) benchmark::DoNotOptimize(BatchNormReluBackward(gy, x, w, b, mean, var, 1e-5, r)[0]);
  }
  const int64_t tensors = pass < 2 ? (epilogue ? 3 : 2) : (epilogue ? 5 : 3);
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(tensors * x.numel() * sizeof(float)),
                                              benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  const char* passes[] = {"forward", "forward, relu(bn(x) + residual)", "backward", "backward, relu(bn(x) + residual)"};
  state.SetLabel("128x" + std::to_string(C) + "x" + std::to_string(HW) + "x" + std::to_string(HW) + " channels-last, " +
                 passes[pass] + ", 1 thread");
}
BENCHMARK(BM_BatchNormChannelsLast)->ArgsProduct({{0, 1, 2}, {0, 1, 2, 3}})->UseRealTime()->MinTime(0.5);

// Note [Fused layer norm] (backends/cpu/reference_normalization.cc): BERT-base's
// layer norm (128 tokens x 768) and attention softmax (12 heads x 128 x 128),
// f32, 1 thread, the kernel against the composition of core ops it replaced
// (what a backend without the kernel still runs). GB/s: the input read and the
// output written once; both fit in L2, as in the model.
void BM_BertNorms(benchmark::State& state) {
  SetNumThreads(1);
  const bool softmax = state.range(0) == 1, fused = state.range(1) == 1;
  Generator gen(7);
  Tensor x = softmax ? Normal({1, 12, 128, 128}, 0, 3, &gen) : Normal({1, 128, 768}, 0.5, 2, &gen);
  Tensor w = Uniform({768}, 0.5, 1.5, &gen), b = Uniform({768}, -0.2, 0.2, &gen);
  NoGradGuard no_grad;
  for (auto _ : state) {
    if (softmax && fused) benchmark::DoNotOptimize(Softmax(x, -1));
    if (softmax && !fused) {
      Tensor e = Exp(Sub(x, Max(x, {-1}, true)));
      benchmark::DoNotOptimize(Div(e, Sum(e, {-1}, true)));
    }
    if (!softmax && fused) benchmark::DoNotOptimize(LayerNorm(x, {768}, w, b, 1e-12));
    if (!softmax && !fused) benchmark::DoNotOptimize(LayerNormComposite(x, {768}, w, b, 1e-12));
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(2 * x.numel() * sizeof(float)),
                                              benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.SetLabel(std::string(softmax ? "softmax 12x128x128" : "layer norm 128x768") +
                 (fused ? ", one kernel" : ", composition of core ops") + ", 1 thread");
}
BENCHMARK(BM_BertNorms)->ArgsProduct({{0, 1}, {0, 1}})->UseRealTime()->MinTime(0.5);

void BM_MemcpyF32_16M(benchmark::State& state) {  // the memory-bandwidth reference for add
  const int64_t n = 16 << 20;
  std::vector<float> a(n, 1.0f), y(n);
  for (auto _ : state) {
    std::memcpy(y.data(), a.data(), n * sizeof(float));
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(2.0 * n * sizeof(float), benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}
BENCHMARK(BM_MemcpyF32_16M)->UseRealTime()->MinTime(1.0);

}  // namespace
}  // namespace quanta

int main(int argc, char** argv) {
  const quanta::CpuPeak& p = quanta::Peak();
  std::printf("CPU peak (computed): %d cores x %.2f GHz x %d f32 FLOP/cycle = %.1f GFLOP/s (%.1f per core)\n",
              p.cores, p.ghz, p.flops_per_cycle, p.gflops(), p.gflops() / p.cores);
  std::printf("  from: %s\n", p.how.c_str());
  std::printf("Target: matmul at >= 80%% of peak per thread count.\n\n");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// The CPU backend: aligned host memory, the reference kernels for every op and
// oneDNN fast paths for matmul and conv2d. Linking //backends/cpu registers it.
//
//   Tensor fast = Matmul(a, b);                  // oneDNN
//   { cpu::ReferenceModeGuard ref; slow = Matmul(a, b); }   // scalar loops
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace quanta::cpu {

// oneDNN primitives built and cached so far (one per op, shape and thread count).
size_t OneDnnCachedPrimitives();
// Of those, the convolutions built with oneDNN's Winograd kernels (Note
// [Winograd convolutions] in onednn.cc: f32 3x3 stride 1, 32+ channels;
// Backend::SetOption("winograd", "0") builds direct ones instead).
size_t OneDnnWinogradPrimitives();
// What the f32 convolutions built since a OneDnnWinogradPrimitives() reading
// ran as, for benchmark reports (what ran, not what was asked: oneDNN 2.6 has
// Winograd kernels only with AVX-512, so on an AVX2 CPU every one is direct).
std::string DescribeConvolutions(size_t winograd_primitives_before);

// Note [int8 convolution implementations] in onednn.cc: which of the
// implementations oneDNN offers for an int8 convolution runs. The count of
// primitives so far for which the rule took another than oneDNN's first, and
// the last choice made (the names as ONEDNN_VERBOSE prints them; candidates:
// every implementation offered but the reference ones), for tests.
struct Int8Choice {
  std::vector<std::string> candidates;
  std::string chosen;
};
size_t OneDnnRuleInt8Choices();
Int8Choice OneDnnLastInt8Choice();

// Whether oneDNN has bf16 matmul and convolution kernels on this CPU: 2.6
// has them from AVX-512 up (emulating the bf16 instructions where the CPU
// lacks them), none on AVX2 machines (a Zen 3 EPYC), where bf16 matmul and
// conv2d run the reference kernels and say so once.
bool OneDnnHasBf16Kernels();
// Whether oneDNN's int8 kernels here accumulate with VNNI (vpdpbusd); without
// it they use vpmaddubsw, and the integer kernels take the measures of Note
// [Exact integers without VNNI] in onednn.cc.
bool OneDnnHasVnni();

// Integer convolutions and matmuls so far that ran their weights as two halves
// (Note [Exact integers without VNNI] in onednn.cc: CPUs without VNNI, 8-bit
// sources with |w| > 64). For tests that narrower sources need none.
size_t OneDnnSplitWeightCalls();

// Integer matmul primitives built so far whose constant weights oneDNN took in
// a layout of its own (Note [Packed matmul weights] in onednn.cc). For tests
// that a converted model's matmuls run on packed weights.
size_t OneDnnPackedMatmulPrimitives();

// Quantize and dequantize calls so far that took the general strided loop (an
// index computation per element) rather than a run loop (Note [Fake-quant
// runs], Note [Per-tensor runs] in reference_quantization.cc): per-channel
// parameters on a strided view. For tests that the run loops ran.
size_t QuantizeGeneralLoops();

// Sum, max, min and argmax calls so far that took the general loop (an index
// computation per element) rather than a dense run (Note [Dense reductions])
// or a column loop (Note [Column reductions] in reference_reductions.cc).
size_t ReductionGeneralLoops();

// While alive, every CPU op runs its reference kernel (all threads). For tests
// that hold fast kernels equal to the reference.
class ReferenceModeGuard {
 public:
  ReferenceModeGuard();
  ~ReferenceModeGuard();
  ReferenceModeGuard(const ReferenceModeGuard&) = delete;
  ReferenceModeGuard& operator=(const ReferenceModeGuard&) = delete;
};

}  // namespace quanta::cpu

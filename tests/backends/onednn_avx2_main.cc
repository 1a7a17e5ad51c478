// main() of //tests/backends:onednn_avx2_test: oneDNN limited to AVX2 before any
// primitive exists, so the int8 tests run the kernels a CPU without VNNI gets
// (Note [Exact integers without VNNI] in backends/cpu/onednn.cc) on any machine
// that has AVX2. Only the integer tests: below AVX-512, oneDNN has no bf16/f16
// kernels and the float tests would count the fallbacks they expect not to see.
#include <cstdio>

#include "gtest/gtest.h"
#include "oneapi/dnnl/dnnl.hpp"

int main(int argc, char** argv) {
  if (dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx2) != dnnl::status::success) {
    std::fprintf(stderr, "oneDNN refused to limit itself to AVX2\n");
    return 1;
  }
  ::testing::GTEST_FLAG(filter) = "OneDnn.Quantized*:OneDnn.Integer*:OneDnn.RefusedCasesAreCounted:OneDnnExact.*";
  ::testing::InitGoogleTest(&argc, argv);
  if (dnnl::get_effective_cpu_isa() != dnnl::cpu_isa::avx2) {
    std::printf("this CPU has no AVX2: oneDNN runs below it, and the test says nothing about AVX2\n");
  }
  return RUN_ALL_TESTS();
}

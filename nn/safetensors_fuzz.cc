// libFuzzer target for the safetensors parser: any bytes must give a value or a
// clear error, never a crash or an over-read. The normal test build runs it over
// tests/nn/testdata/safetensors_seeds; `bazel build --config=fuzz
// //nn:safetensors_fuzzer` builds the real fuzzer (clang, libclang-rt-14-dev).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "nn/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = quanta::ParseSafetensors(std::string_view(reinterpret_cast<const char*>(data), size));
  (void)parsed;
  return 0;
}

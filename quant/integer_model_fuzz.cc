// libFuzzer target for the integer-model loader (safetensors + the graph in its
// metadata): any bytes give a model or a clear error, never a crash. The test
// build runs it over a converted model's truncations and byte flips
// (tests/quant/convert_test.cc); `bazel build --config=fuzz
// //quant:integer_model_fuzzer` builds the real fuzzer, seeds in
// tests/quant/testdata/integer_model_seeds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "quant/integer_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto model = quanta::quant::IntegerModel::Parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (model.ok()) {
    (void)(*model)->Summary();
    (void)(*model)->Bytes();
  }
  return 0;
}

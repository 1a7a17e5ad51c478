// libFuzzer entry for the lines reader: bazel build --config=fuzz //data/fuzz:lines_fuzzer
#include "data/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return quanta::data::fuzz::Lines(data, size);
}

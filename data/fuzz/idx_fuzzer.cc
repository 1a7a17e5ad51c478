// libFuzzer entry for the idx reader: bazel build --config=fuzz //data/fuzz:idx_fuzzer
#include "data/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return quanta::data::fuzz::Idx(data, size);
}

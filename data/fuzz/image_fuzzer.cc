// libFuzzer entry for the image reader: bazel build --config=fuzz //data/fuzz:image_fuzzer
#include "data/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return quanta::data::fuzz::Image(data, size);
}

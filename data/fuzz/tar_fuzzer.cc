// libFuzzer entry for the tar reader: bazel build --config=fuzz //data/fuzz:tar_fuzzer
#include "data/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return quanta::data::fuzz::Tar(data, size);
}

// libFuzzer entry for the cifar reader: bazel build --config=fuzz //data/fuzz:cifar_fuzzer
#include "data/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return quanta::data::fuzz::Cifar(data, size);
}

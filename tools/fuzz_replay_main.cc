// The main() of a fuzz target in the normal (gcc) build: runs
// LLVMFuzzerTestOneInput over the files given, so a crashing input found by
// libFuzzer (--config=fuzz) replays without clang:  bazel run //data/fuzz:tar_fuzzer -- crash-1234
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot open\n", argv[i]);
      return 1;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    std::string bytes = ss.str();
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    std::printf("%s: %zu bytes, no crash\n", argv[i], bytes.size());
  }
  return 0;
}

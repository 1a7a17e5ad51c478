// The readers' fuzz entry points over valid seeds and systematic mutations of
// them (every truncation, byte flips at every position): no crash, no hang.
// libFuzzer explores further with --config=fuzz (data/fuzz/).
#include "data/fuzz_targets.h"

#include "gtest/gtest.h"
#include "tests/data/test_files.h"

namespace quanta::data {
namespace {

using namespace testing;
using Target = int (*)(const uint8_t*, size_t);

void Mutate(Target target, const std::string& seed, size_t stride = 1) {
  auto run = [&](const std::string& s) { target(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  run(seed);
  for (size_t n = 0; n < seed.size(); n += stride) run(seed.substr(0, n));
  for (size_t i = 0; i < seed.size(); i += stride) {
    for (uint8_t flip : {0x01, 0x80, 0xFF}) {
      std::string m = seed;
      m[i] = static_cast<char>(m[i] ^ flip);
      run(m);
    }
  }
}

TEST(Fuzz, Cifar) { Mutate(&fuzz::Cifar, CifarBytes(2, true, {3, 4}), 97); }
TEST(Fuzz, Idx) { Mutate(&fuzz::Idx, IdxImages(2, 3, 3) + IdxLabels({1, 2})); }
TEST(Fuzz, Image) {
  Mutate(&fuzz::Image, Png(5, 4, 3, 1));
  Mutate(&fuzz::Image, Bmp(3, 3, 2));
}
TEST(Fuzz, Tar) {
  Mutate(&fuzz::Tar, Tar({{"a/b.txt", "hello"}, {"c/", "", '5'}}), 3);
  Mutate(&fuzz::Tar, Gzip(Tar({{"a.txt", "x"}})));
}
TEST(Fuzz, Lines) { Mutate(&fuzz::Lines, "a\tb\r\nc\n\nd"); }

}  // namespace
}  // namespace quanta::data

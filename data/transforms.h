// Per-image transforms, composable, deterministic: each image's randomness comes
// from a Philox stream keyed by (seed, epoch, index), so a given epoch gives the
// same images whatever the number of workers. ToTensor turns u8 HWC into f32 CHW
// in [0, 1]; the transforms after it work on f32 CHW.
//
//   auto train = Compose({ToTensor(), RandomCrop(32, 4), HorizontalFlip(0.5),
//                         Normalize({0.507, 0.487, 0.441}, {0.267, 0.256, 0.276}), Cutout(8)});
//   Sample s = Sample::FromImage(example.image);
//   SampleRng rng(seed, epoch, index);
//   train->Apply(s, rng);    // s.chw: 3 * 32 * 32 floats
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace quanta::data {

// One image in flight: u8 HWC until ToTensor, f32 CHW after.
struct Sample {
  int64_t c = 0, h = 0, w = 0;
  bool is_float = false;
  std::vector<uint8_t> hwc;
  std::vector<float> chw;
  static Sample FromImage(const Tensor& image);  // u8 (H, W, C)
};

// Uniform numbers for one image: Philox keyed by seed, counters (epoch, index, n).
class SampleRng {
 public:
  SampleRng(uint64_t seed, uint64_t epoch, uint64_t index) : seed_(seed), base_((epoch << 40) ^ (index << 8)) {}
  double Uniform();  // [0, 1)
  int64_t Below(int64_t n) { return static_cast<int64_t>(Uniform() * static_cast<double>(n)); }

 private:
  uint64_t seed_, base_, n_ = 0;
};

class Transform {
 public:
  virtual ~Transform() = default;
  virtual void Apply(Sample& s, SampleRng& rng) const = 0;
};
using TransformPtr = std::shared_ptr<const Transform>;

TransformPtr Compose(std::vector<TransformPtr> transforms);
TransformPtr ToTensor();
// Zero-pads by `padding` on each side, then crops `size` x `size` at a random place.
TransformPtr RandomCrop(int64_t size, int64_t padding = 0);
TransformPtr HorizontalFlip(double p = 0.5);
TransformPtr Normalize(std::vector<float> mean, std::vector<float> std);
// Zeroes a size x size square at a random center (clipped at the borders).
TransformPtr Cutout(int64_t size);

}  // namespace quanta::data

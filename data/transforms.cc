// Transforms as plain loops over one image's buffer: cheap enough that the loader
// keeps up with training (docs/benchmarks.md, bench_data).
#include "data/transforms.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/generator.h"

namespace quanta::data {

Sample Sample::FromImage(const Tensor& image) {
  QUANTA_CHECK(image.dim() == 3 && image.dtype() == DType::kU8, "sample: expected a u8 (H, W, C) image, got ",
               image.Describe());
  Tensor c = image.Contiguous();
  Sample s;
  s.h = image.size(0);
  s.w = image.size(1);
  s.c = image.size(2);
  const uint8_t* p = c.data<uint8_t>();
  s.hwc.assign(p, p + c.numel());
  return s;
}

double SampleRng::Uniform() { return PhiloxUniform(seed_, base_ + n_++); }

namespace {

void NeedFloat(const Sample& s, const char* op) {
  QUANTA_CHECK(s.is_float, op, ": needs an f32 CHW sample; put ToTensor() before it");
}

class ComposeT : public Transform {
 public:
  explicit ComposeT(std::vector<TransformPtr> t) : transforms_(std::move(t)) {}
  void Apply(Sample& s, SampleRng& rng) const override {
    for (const auto& t : transforms_) t->Apply(s, rng);
  }

 private:
  std::vector<TransformPtr> transforms_;
};

class ToTensorT : public Transform {
 public:
  void Apply(Sample& s, SampleRng&) const override {
    QUANTA_CHECK(!s.is_float, "to_tensor: the sample is already f32");
    s.chw.resize(s.c * s.h * s.w);
    for (int64_t y = 0; y < s.h; ++y) {
      for (int64_t x = 0; x < s.w; ++x) {
        for (int64_t ch = 0; ch < s.c; ++ch) {
          s.chw[(ch * s.h + y) * s.w + x] = s.hwc[(y * s.w + x) * s.c + ch] * (1.0f / 255.0f);
        }
      }
    }
    s.is_float = true;
    s.hwc.clear();
  }
};

class RandomCropT : public Transform {
 public:
  RandomCropT(int64_t size, int64_t padding) : size_(size), padding_(padding) {
    QUANTA_CHECK(size > 0 && padding >= 0, "random_crop: bad size ", size, " or padding ", padding);
  }
  void Apply(Sample& s, SampleRng& rng) const override {
    NeedFloat(s, "random_crop");
    int64_t ph = s.h + 2 * padding_, pw = s.w + 2 * padding_;
    QUANTA_CHECK(size_ <= ph && size_ <= pw, "random_crop: crop ", size_, " larger than the padded image ", ph, "x", pw);
    int64_t top = rng.Below(ph - size_ + 1) - padding_, left = rng.Below(pw - size_ + 1) - padding_;
    std::vector<float> out(s.c * size_ * size_, 0.0f);
    for (int64_t ch = 0; ch < s.c; ++ch) {
      for (int64_t y = 0; y < size_; ++y) {
        int64_t sy = top + y;
        if (sy < 0 || sy >= s.h) continue;
        for (int64_t x = 0; x < size_; ++x) {
          int64_t sx = left + x;
          if (sx >= 0 && sx < s.w) out[(ch * size_ + y) * size_ + x] = s.chw[(ch * s.h + sy) * s.w + sx];
        }
      }
    }
    s.chw.swap(out);
    s.h = s.w = size_;
  }

 private:
  int64_t size_, padding_;
};

class HorizontalFlipT : public Transform {
 public:
  explicit HorizontalFlipT(double p) : p_(p) {}
  void Apply(Sample& s, SampleRng& rng) const override {
    NeedFloat(s, "horizontal_flip");
    if (rng.Uniform() >= p_) return;
    for (int64_t row = 0; row < s.c * s.h; ++row) std::reverse(s.chw.begin() + row * s.w, s.chw.begin() + (row + 1) * s.w);
  }

 private:
  double p_;
};

class NormalizeT : public Transform {
 public:
  NormalizeT(std::vector<float> mean, std::vector<float> std) : mean_(std::move(mean)), std_(std::move(std)) {
    QUANTA_CHECK(mean_.size() == std_.size() && !mean_.empty(), "normalize: ", mean_.size(), " means and ",
                 std_.size(), " stds");
    for (float v : std_) QUANTA_CHECK(v > 0, "normalize: std ", v, " must be positive");
  }
  void Apply(Sample& s, SampleRng&) const override {
    NeedFloat(s, "normalize");
    QUANTA_CHECK(static_cast<int64_t>(mean_.size()) == s.c, "normalize: ", mean_.size(), " channels given, image has ", s.c);
    int64_t plane = s.h * s.w;
    for (int64_t ch = 0; ch < s.c; ++ch) {
      float m = mean_[ch], inv = 1.0f / std_[ch];
      for (int64_t i = 0; i < plane; ++i) s.chw[ch * plane + i] = (s.chw[ch * plane + i] - m) * inv;
    }
  }

 private:
  std::vector<float> mean_, std_;
};

class CutoutT : public Transform {
 public:
  explicit CutoutT(int64_t size) : size_(size) { QUANTA_CHECK(size > 0, "cutout: size ", size, " must be positive"); }
  void Apply(Sample& s, SampleRng& rng) const override {
    NeedFloat(s, "cutout");
    int64_t cy = rng.Below(s.h), cx = rng.Below(s.w);
    int64_t y0 = std::max<int64_t>(0, cy - size_ / 2), y1 = std::min(s.h, cy - size_ / 2 + size_);
    int64_t x0 = std::max<int64_t>(0, cx - size_ / 2), x1 = std::min(s.w, cx - size_ / 2 + size_);
    for (int64_t ch = 0; ch < s.c; ++ch) {
      for (int64_t y = y0; y < y1; ++y) {
        std::fill(s.chw.begin() + (ch * s.h + y) * s.w + x0, s.chw.begin() + (ch * s.h + y) * s.w + x1, 0.0f);
      }
    }
  }

 private:
  int64_t size_;
};

}  // namespace

TransformPtr Compose(std::vector<TransformPtr> t) { return std::make_shared<ComposeT>(std::move(t)); }
TransformPtr ToTensor() { return std::make_shared<ToTensorT>(); }
TransformPtr RandomCrop(int64_t size, int64_t padding) { return std::make_shared<RandomCropT>(size, padding); }
TransformPtr HorizontalFlip(double p) { return std::make_shared<HorizontalFlipT>(p); }
TransformPtr Normalize(std::vector<float> mean, std::vector<float> std) {
  return std::make_shared<NormalizeT>(std::move(mean), std::move(std));
}
TransformPtr Cutout(int64_t size) { return std::make_shared<CutoutT>(size); }

}  // namespace quanta::data

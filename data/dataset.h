// Datasets: a size and indexed examples. ImageDataset holds decoded images as one
// u8 (N, H, W, C) tensor plus labels, which is what every image reader returns;
// an example's image is a view into it (no copy). Not here: transforms and
// batching (data/transforms.h, data/loader.h).
//
//   absl::StatusOr<std::shared_ptr<ImageDataset>> train = ReadCifar(dir, CifarKind::k100, Split::kTrain);
//   Example e = (*train)->Get(0);   // e.image: u8 (32, 32, 3), e.label: 0..99
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace quanta::data {

struct Example {
  Tensor image;   // u8 (H, W, C)
  int64_t label;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Example Get(int64_t index) const = 0;
};

class ImageDataset : public Dataset {
 public:
  // images: u8 (N, H, W, C); labels: one per image, each in [0, num_classes).
  ImageDataset(Tensor images, std::vector<int64_t> labels, int64_t num_classes,
               std::vector<std::string> class_names = {});
  int64_t size() const override { return images_.size(0); }
  Example Get(int64_t index) const override;
  const Tensor& images() const { return images_; }
  const std::vector<int64_t>& labels() const { return labels_; }
  int64_t num_classes() const { return num_classes_; }
  const std::vector<std::string>& class_names() const { return class_names_; }

 private:
  Tensor images_;
  std::vector<int64_t> labels_;
  int64_t num_classes_;
  std::vector<std::string> class_names_;
};

}  // namespace quanta::data

// ImageDataset: checks at construction, views at access.
#include "data/dataset.h"

#include "core/error.h"

namespace quanta::data {

ImageDataset::ImageDataset(Tensor images, std::vector<int64_t> labels, int64_t num_classes,
                           std::vector<std::string> class_names)
    : images_(std::move(images)), labels_(std::move(labels)), num_classes_(num_classes),
      class_names_(std::move(class_names)) {
  QUANTA_CHECK(images_.dim() == 4 && images_.dtype() == DType::kU8 && images_.is_contiguous(),
               "ImageDataset: images must be contiguous u8 (N, H, W, C), got ", images_.Describe());
  QUANTA_CHECK(static_cast<int64_t>(labels_.size()) == images_.size(0), "ImageDataset: ", labels_.size(),
               " labels for ", images_.size(0), " images");
  for (int64_t l : labels_) {
    QUANTA_CHECK(l >= 0 && l < num_classes_, "ImageDataset: label ", l, " outside [0, ", num_classes_, ")");
  }
}

Example ImageDataset::Get(int64_t index) const {
  QUANTA_CHECK(index >= 0 && index < size(), "ImageDataset: index ", index, " outside [0, ", size(), ")");
  return {images_.Select(0, index), labels_[index]};
}

}  // namespace quanta::data

// Readers for the data sets Quanta trains on. Each has an in-memory parser (what
// the fuzz targets in data/fuzz/ call) and a file reader around it. Errors are
// absl::Status naming the file and the problem; nothing here crashes on bad input.
//
//   auto train = ReadCifar("/data", CifarKind::k100, Split::kTrain);        // fine labels
//   auto fmnist = ReadFashionMnist(Split::kTest);   // Debian's dataset-fashion-mnist
//   auto folder = ReadImageFolder("/data/flowers", 64, 64);
//   auto lines = ReadLines("/data/notes.txt");
//   auto sst2 = ReadLabeledText("/data/sst2/train.tsv");    // label<TAB>text
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"

namespace quanta::data {

enum class Split { kTrain, kTest };
enum class CifarKind { k10, k100 };
enum class CifarLabels { kFine, kCoarse };  // CIFAR-100's 100 fine or 20 coarse classes

// ---- files ------------------------------------------------------------------------
absl::StatusOr<std::string> ReadFileBytes(const std::string& path);
// Inflates a gzip stream (at most max_bytes of output).
absl::StatusOr<std::string> Gunzip(std::string_view bytes, std::string_view name,
                                   size_t max_bytes = size_t{4} << 30);

// ---- CIFAR binary format: records of label byte(s) + 3072 bytes (3 x 32 x 32) ----
absl::StatusOr<std::shared_ptr<ImageDataset>> ParseCifar(std::string_view bytes, CifarKind kind, CifarLabels labels,
                                                         std::string_view name);
// CIFAR-10: <dir>/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin;
// CIFAR-100: <dir>/cifar-100-binary/{train,test}.bin.
absl::StatusOr<std::shared_ptr<ImageDataset>> ReadCifar(const std::string& data_dir, CifarKind kind, Split split,
                                                        CifarLabels labels = CifarLabels::kFine);

// ---- IDX (MNIST, Fashion-MNIST), plain or gzip ------------------------------------
absl::StatusOr<std::shared_ptr<ImageDataset>> ParseIdx(std::string_view images, std::string_view labels,
                                                       int64_t num_classes, std::string_view name);
absl::StatusOr<std::shared_ptr<ImageDataset>> ReadIdx(const std::string& images_path, const std::string& labels_path,
                                                      int64_t num_classes = 10);
// Where Debian's dataset-fashion-mnist package installs the files.
inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";
absl::StatusOr<std::shared_ptr<ImageDataset>> ReadFashionMnist(Split split, const std::string& dir = kFashionMnistDir);

// ---- images (PNG, JPEG, BMP via stb_image) and image folders -----------------------
// Decodes to u8 (H, W, channels).
absl::StatusOr<Tensor> DecodeImage(std::string_view bytes, std::string_view name, int channels = 3);
// Resizes u8 (H, W, C) to (height, width, C).
absl::StatusOr<Tensor> ResizeImage(const Tensor& image, int64_t height, int64_t width);
// root/<class>/<image>: classes are the sorted subfolder names.
absl::StatusOr<std::shared_ptr<ImageDataset>> ReadImageFolder(const std::string& root, int64_t height, int64_t width,
                                                              int channels = 3);

// ---- text: one example per line ---------------------------------------------------
absl::StatusOr<std::vector<std::string>> ParseLines(std::string_view bytes, std::string_view name);
absl::StatusOr<std::vector<std::string>> ReadLines(const std::string& path);
// Text classification, one "label<TAB>text" a line (train_bert's format): the
// label is everything before the first tab; blank lines are skipped; a line
// without a tab, with an empty label or an empty text is an error naming the
// file and line, and so is a file with no example.
struct LabeledText {
  std::string label, text;
  int64_t line = 0;  // 1-based, for messages about this example
};
absl::StatusOr<std::vector<LabeledText>> ParseLabeledText(std::string_view bytes, std::string_view name);
absl::StatusOr<std::vector<LabeledText>> ReadLabeledText(const std::string& path);

}  // namespace quanta::data

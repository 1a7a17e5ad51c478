// What //apps:export and //apps:inspect share: paths as the user typed them
// (relative to where `bazel run` was called), and a file read as either of the
// two kinds Quanta writes, an integer model or a training checkpoint.
//
//   absl::StatusOr<ModelFile> f = ReadModelFile(UserPath(argv[1]));
//   if (f.ok() && f->integer) std::cout << f->integer->Summary();
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/shape.h"
#include "nn/safetensors.h"
#include "quant/integer_model.h"

namespace quanta::apps {

// `path` relative to the folder `bazel run` was called from (BUILD_WORKING_DIRECTORY).
std::string UserPath(const std::string& path);

struct ModelFile {
  std::string path;
  std::shared_ptr<quant::IntegerModel> integer;  // an integer model file, or
  Safetensors checkpoint;                        // a checkpoint (nn::SaveCheckpoint) or other safetensors
  int64_t bytes = 0;                             // on disk
};
// Errors name the file and say why it is neither.
absl::StatusOr<ModelFile> ReadModelFile(const std::string& path);

// "1,3,32,32" -> {1, 3, 32, 32}; every dimension > 0.
absl::StatusOr<Shape> ParseShape(const std::string& text);
// The input shape an integer model was saved with (metadata "input_shape",
// written by //apps:train), or an error saying to pass --input_shape.
absl::StatusOr<Shape> SavedInputShape(const quant::IntegerModel& model, const std::string& path);

// What the file holds, for people: its kind, the command that made it, and for
// an integer model the graph, bits and scale ranges per layer and its bytes; for
// a checkpoint its tensors (quantizer state included) and parameters.
std::string Describe(const ModelFile& file);

}  // namespace quanta::apps

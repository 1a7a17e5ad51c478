// Checkpoints: a model's state and, optionally, its optimizer's in one
// safetensors file ("model.<name>", "optimizer.<key>"), written atomically.
//
//   QUANTA_RETURN_IF_ERROR(SaveCheckpoint(path, *model, &opt, {{"epoch", "7"}}));
//   absl::StatusOr<std::map<std::string, std::string>> meta = LoadCheckpoint(path, *model, &opt);
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nn/module.h"
#include "nn/optim.h"

namespace quanta::nn {

absl::Status SaveCheckpoint(const std::string& path, const Module& model, const Optimizer* optimizer = nullptr,
                            const std::map<std::string, std::string>& metadata = {});
// Restores model (strictly: missing, unexpected and mis-shaped keys are errors
// naming them) and optimizer; returns the metadata.
absl::StatusOr<std::map<std::string, std::string>> LoadCheckpoint(const std::string& path, Module& model,
                                                                  Optimizer* optimizer = nullptr);

}  // namespace quanta::nn

// Model + optimizer state in one safetensors file.
#include "nn/checkpoint.h"

#include "absl/strings/str_cat.h"
#include "nn/safetensors.h"

namespace quanta::nn {

absl::Status SaveCheckpoint(const std::string& path, const Module& model, const Optimizer* optimizer,
                            const std::map<std::string, std::string>& metadata) {
  TensorMap all;
  for (const auto& [name, t] : model.StateDict()) all["model." + name] = t;
  if (optimizer != nullptr) {
    for (const auto& [name, t] : optimizer->StateDict()) all["optimizer." + name] = t;
  }
  return SaveSafetensors(path, all, metadata);
}

absl::StatusOr<std::map<std::string, std::string>> LoadCheckpoint(const std::string& path, Module& model,
                                                                  Optimizer* optimizer) {
  absl::StatusOr<Safetensors> file = LoadSafetensors(path);
  if (!file.ok()) return file.status();
  TensorMap model_state, optimizer_state;
  for (auto& [name, t] : file->tensors) {
    if (name.rfind("model.", 0) == 0) {
      model_state[name.substr(6)] = t;
    } else if (name.rfind("optimizer.", 0) == 0) {
      optimizer_state[name.substr(10)] = t;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path, ": unexpected key \"", name,
                                                     "\" (neither model. nor optimizer.)"));
    }
  }
  if (absl::Status s = model.LoadStateDict(model_state); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path, ": ", s.message()));
  }
  if (optimizer != nullptr) {
    if (optimizer_state.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path, ": holds no optimizer state"));
    }
    if (absl::Status s = optimizer->LoadStateDict(optimizer_state); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path, ": ", s.message()));
    }
  }
  return file->metadata;
}

}  // namespace quanta::nn

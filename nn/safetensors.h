// The safetensors format (8-byte little-endian header length, a JSON header of
// {name: {dtype, shape, data_offsets}} plus optional "__metadata__", then raw
// little-endian data), so that other tools read what Quanta writes. Reading is
// hardened against corrupt and hostile files: every length and offset is checked
// before it is used, and nothing reads past the buffer.
//
//   absl::Status s = SaveSafetensors("/ckpt/model.safetensors", tensors, {{"epoch", "3"}});
//   absl::StatusOr<Safetensors> f = LoadSafetensors("/ckpt/model.safetensors");
//   if (!f.ok()) LOG(ERROR) << f.status();   // names the file and the problem
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nn/module.h"

namespace quanta {

struct Safetensors {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;
};

// Serializes to bytes (header padded with spaces to a multiple of 8).
absl::StatusOr<std::string> SerializeSafetensors(const TensorMap& tensors,
                                                 const std::map<std::string, std::string>& metadata = {});
// Parses bytes; errors name the problem (and `source` when given).
absl::StatusOr<Safetensors> ParseSafetensors(std::string_view bytes, std::string_view source = "");

// Atomic: writes a temporary file beside `path`, fsyncs it, renames it over
// `path` and fsyncs the folder. A failure leaves any previous file untouched.
absl::Status SaveSafetensors(const std::string& path, const TensorMap& tensors,
                             const std::map<std::string, std::string>& metadata = {});
absl::StatusOr<Safetensors> LoadSafetensors(const std::string& path);

// Writes `bytes` to path atomically (the mechanism behind SaveSafetensors).
absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes);

}  // namespace quanta

// Getting data sets onto the machine: MD5, a tar reader that refuses entries
// escaping the target folder, extraction into a temporary folder renamed into
// place, and downloads with libcurl. EnsureCifar100 puts them together.
//
//   absl::Status s = EnsureCifar100("/data");   // downloads, verifies, unpacks if missing
//   std::string md5 = Md5Hex(bytes);
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace quanta::data {

// RFC 1321, lowercase hex.
std::string Md5Hex(std::string_view bytes);

struct TarEntry {
  std::string name;       // relative, normalized: no "..", not absolute
  std::string_view data;  // into the archive's bytes
  bool is_dir = false;
};
// Parses a ustar/GNU/pax archive: regular files and folders only; checks every
// header checksum, size and name.
absl::StatusOr<std::vector<TarEntry>> ParseTar(std::string_view bytes, std::string_view name);

// Unpacks a .tar.gz into target_dir: everything goes to a temporary folder
// inside it first and each top-level entry is renamed into place at the end, so
// a failure leaves no half-written data set. Existing entries are not replaced.
absl::Status ExtractTarGz(const std::string& archive_path, const std::string& target_dir);

// Downloads url to path (a temporary file renamed at the end).
absl::Status DownloadFile(const std::string& url, const std::string& path);

inline constexpr char kCifar100Url[] = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
inline constexpr char kCifar100Md5[] = "03b5dce01913d631647c71ecec9e9cb8";

// Makes sure <data_dir>/cifar-100-binary/{train,test}.bin exist: downloads
// cifar-100-binary.tar.gz when it is missing, verifies its MD5, unpacks it.
// Without a network the error says what to download and where to put it.
absl::Status EnsureCifar100(const std::string& data_dir, const std::string& url = kCifar100Url,
                            const std::string& md5 = kCifar100Md5);

}  // namespace quanta::data

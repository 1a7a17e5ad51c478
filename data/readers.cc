// The readers: every length is checked against the bytes before it is used.
#include "data/readers.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/ops.h"
#include "stb/stb_image.h"
#include "stb/stb_image_resize.h"

namespace quanta::data {
namespace {

namespace fs = std::filesystem;

absl::Status Bad(std::string_view name, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(name), ": ", what));
}

constexpr int64_t kCifarImageBytes = 3 * 32 * 32;

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads a file, inflating it when it starts with the gzip magic bytes.
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() >= 2 && static_cast<unsigned char>((*bytes)[0]) == 0x1f &&
      static_cast<unsigned char>((*bytes)[1]) == 0x8b) {
    return Gunzip(*bytes, path);
  }
  return bytes;
}

const std::vector<std::string>& FashionMnistClasses() {
  static const auto* names = new std::vector<std::string>{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return *names;
}

}  // namespace

absl::StatusOr<std::string> ReadFileBytes(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  if (fs::is_directory(path, ec)) return absl::InvalidArgumentError(absl::StrCat(path, ": is a folder, not a file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return ss.str();
}

absl::StatusOr<std::string> Gunzip(std::string_view bytes, std::string_view name, size_t max_bytes) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return Bad(name, "zlib could not start");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(std::min<size_t>(bytes.size(), UINT32_MAX));
  std::string out;
  char buffer[1 << 16];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(buffer);
    z.avail_out = sizeof buffer;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&z);
      return Bad(name, absl::StrCat("corrupt gzip data (", z.msg ? z.msg : "truncated", ")"));
    }
    out.append(buffer, sizeof buffer - z.avail_out);
    if (out.size() > max_bytes) {
      inflateEnd(&z);
      return Bad(name, absl::StrCat("inflates to more than ", max_bytes, " bytes"));
    }
    if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0) {
      inflateEnd(&z);
      return Bad(name, "truncated gzip data");
    }
  }
  inflateEnd(&z);
  return out;
}

// ---- CIFAR ----------------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<ImageDataset>> ParseCifar(std::string_view bytes, CifarKind kind, CifarLabels which,
                                                         std::string_view name) {
  int64_t label_bytes = kind == CifarKind::k10 ? 1 : 2;
  int64_t record = label_bytes + kCifarImageBytes;
  int64_t classes = kind == CifarKind::k10 ? 10 : (which == CifarLabels::kFine ? 100 : 20);
  if (bytes.empty() || static_cast<int64_t>(bytes.size()) % record != 0) {
    return Bad(name, absl::StrCat(bytes.size(), " bytes is not a whole number of ", record, "-byte CIFAR-",
                                  kind == CifarKind::k10 ? 10 : 100, " records"));
  }
  int64_t n = static_cast<int64_t>(bytes.size()) / record;
  Tensor images = Tensor::Empty({n, 32, 32, 3}, DType::kU8);
  uint8_t* out = images.data<uint8_t>();
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) {
    const auto* r = reinterpret_cast<const unsigned char*>(bytes.data()) + i * record;
    // CIFAR-100 records hold (coarse, fine).
    int64_t label = kind == CifarKind::k10 ? r[0] : (which == CifarLabels::kCoarse ? r[0] : r[1]);
    if (label >= classes) {
      return Bad(name, absl::StrCat("record ", i, " has label ", label, ", outside [0, ", classes, ")"));
    }
    labels[i] = label;
    const unsigned char* planes = r + label_bytes;  // R plane, G plane, B plane, each row-major 32x32
    for (int64_t p = 0; p < 32 * 32; ++p) {
      for (int64_t c = 0; c < 3; ++c) out[(i * 32 * 32 + p) * 3 + c] = planes[c * 32 * 32 + p];
    }
  }
  return std::make_shared<ImageDataset>(images, std::move(labels), classes);
}

absl::StatusOr<std::shared_ptr<ImageDataset>> ReadCifar(const std::string& data_dir, CifarKind kind, Split split,
                                                        CifarLabels which) {
  std::vector<std::string> files;
  if (kind == CifarKind::k10) {
    std::string dir = data_dir + "/cifar-10-batches-bin/";
    if (split == Split::kTrain) {
      for (int i = 1; i <= 5; ++i) files.push_back(dir + "data_batch_" + std::to_string(i) + ".bin");
    } else {
      files.push_back(dir + "test_batch.bin");
    }
  } else {
    files.push_back(data_dir + "/cifar-100-binary/" + (split == Split::kTrain ? "train.bin" : "test.bin"));
  }
  std::vector<std::shared_ptr<ImageDataset>> parts;
  for (const std::string& f : files) {
    absl::StatusOr<std::string> bytes = ReadFileBytes(f);
    if (!bytes.ok()) {
      return absl::Status(bytes.status().code(),
                          absl::StrCat(bytes.status().message(), kind == CifarKind::k100
                                                                     ? " (EnsureCifar100 downloads it, or see its message)"
                                                                     : " (unpack cifar-10-binary.tar.gz into the data folder)"));
    }
    absl::StatusOr<std::shared_ptr<ImageDataset>> part = ParseCifar(*bytes, kind, which, f);
    if (!part.ok()) return part.status();
    parts.push_back(*part);
  }
  if (parts.size() == 1) return parts[0];
  std::vector<Tensor> images;
  std::vector<int64_t> labels;
  for (const auto& p : parts) {
    images.push_back(p->images());
    labels.insert(labels.end(), p->labels().begin(), p->labels().end());
  }
  return std::make_shared<ImageDataset>(Concat(images, 0), std::move(labels), parts[0]->num_classes());
}

// ---- IDX ------------------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<ImageDataset>> ParseIdx(std::string_view images, std::string_view labels,
                                                       int64_t num_classes, std::string_view name) {
  auto header = [&](std::string_view b, int want_dims, const char* what,
                    std::vector<int64_t>* dims) -> absl::Status {
    if (b.size() < 4) return Bad(name, absl::StrCat(what, " file is ", b.size(), " bytes, shorter than its header"));
    const auto* p = reinterpret_cast<const unsigned char*>(b.data());
    if (p[0] != 0 || p[1] != 0 || p[2] != 0x08 || p[3] != want_dims) {
      return Bad(name, absl::StrCat(what, " file has magic number 0x", absl::Hex(BigEndian32(p), absl::kZeroPad8),
                                    ", expected 0x0000080", want_dims, " (u8, ", want_dims, " dims)"));
    }
    if (b.size() < 4 + 4 * static_cast<size_t>(want_dims)) return Bad(name, absl::StrCat(what, " header is truncated"));
    uint64_t total = 1;
    for (int d = 0; d < want_dims; ++d) {
      uint32_t v = BigEndian32(p + 4 + 4 * d);
      dims->push_back(v);
      total *= v;
      if (total > (uint64_t{1} << 36)) return Bad(name, absl::StrCat(what, " dims are too large"));
    }
    uint64_t have = b.size() - 4 - 4 * want_dims;
    if (have != total) {
      return Bad(name, absl::StrCat(what, " file holds ", have, " data bytes but its header promises ", total,
                                    have < total ? " (truncated)" : ""));
    }
    return absl::OkStatus();
  };
  std::vector<int64_t> image_dims, label_dims;
  if (absl::Status s = header(images, 3, "images", &image_dims); !s.ok()) return s;
  if (absl::Status s = header(labels, 1, "labels", &label_dims); !s.ok()) return s;
  if (image_dims[0] != label_dims[0]) {
    return Bad(name, absl::StrCat(image_dims[0], " images but ", label_dims[0], " labels"));
  }
  int64_t n = image_dims[0], h = image_dims[1], w = image_dims[2];
  if (n > 0 && (h == 0 || w == 0)) return Bad(name, absl::StrCat("images are ", h, " x ", w, " pixels (empty)"));
  Tensor t = Tensor::Empty({n, h, w, 1}, DType::kU8);
  if (n * h * w > 0) std::memcpy(t.raw_data(), images.data() + 16, n * h * w);
  std::vector<int64_t> l(n);
  for (int64_t i = 0; i < n; ++i) {
    l[i] = static_cast<unsigned char>(labels[8 + i]);
    if (l[i] >= num_classes) return Bad(name, absl::StrCat("label ", l[i], " of example ", i, " is outside [0, ", num_classes, ")"));
  }
  return std::make_shared<ImageDataset>(t, std::move(l), num_classes);
}

absl::StatusOr<std::shared_ptr<ImageDataset>> ReadIdx(const std::string& images_path, const std::string& labels_path,
                                                      int64_t num_classes) {
  absl::StatusOr<std::string> images = ReadMaybeGzip(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::string> labels = ReadMaybeGzip(labels_path);
  if (!labels.ok()) return labels.status();
  return ParseIdx(*images, *labels, num_classes, images_path + " + " + labels_path);
}

absl::StatusOr<std::shared_ptr<ImageDataset>> ReadFashionMnist(Split split, const std::string& dir) {
  std::string prefix = dir + (split == Split::kTrain ? "/train" : "/t10k");
  auto pick = [](const std::string& base) {
    std::error_code ec;
    return fs::exists(base + ".gz", ec) ? base + ".gz" : base;
  };
  absl::StatusOr<std::shared_ptr<ImageDataset>> d =
      ReadIdx(pick(prefix + "-images-idx3-ubyte"), pick(prefix + "-labels-idx1-ubyte"), 10);
  if (!d.ok()) {
    return absl::Status(d.status().code(), absl::StrCat(d.status().message(),
                                                        " (Debian's dataset-fashion-mnist package installs it in ",
                                                        kFashionMnistDir, "; tools/setup.sh installs the package)"));
  }
  return std::make_shared<ImageDataset>((*d)->images(), (*d)->labels(), 10, FashionMnistClasses());
}

// ---- images ---------------------------------------------------------------------------

absl::StatusOr<Tensor> DecodeImage(std::string_view bytes, std::string_view name, int channels) {
  if (channels < 1 || channels > 4) return Bad(name, absl::StrCat("cannot decode to ", channels, " channels"));
  if (bytes.size() > (size_t{1} << 30)) return Bad(name, "file too large to decode");
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  int len = static_cast<int>(bytes.size()), w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &comp)) {
    return Bad(name, absl::StrCat("not a decodable image (", stbi_failure_reason(), ")"));
  }
  if (w <= 0 || h <= 0 || static_cast<int64_t>(w) * h > (int64_t{1} << 26)) {
    return Bad(name, absl::StrCat("image of ", w, "x", h, " pixels is too large"));
  }
  stbi_uc* pixels = stbi_load_from_memory(data, len, &w, &h, &comp, channels);
  if (pixels == nullptr) return Bad(name, absl::StrCat("image fails to decode (", stbi_failure_reason(), ")"));
  Tensor t = Tensor::Empty({h, w, channels}, DType::kU8);
  std::memcpy(t.raw_data(), pixels, static_cast<size_t>(w) * h * channels);
  stbi_image_free(pixels);
  return t;
}

absl::StatusOr<Tensor> ResizeImage(const Tensor& image, int64_t height, int64_t width) {
  if (image.dim() != 3 || image.dtype() != DType::kU8 || height < 1 || width < 1) {
    return absl::InvalidArgumentError(absl::StrCat("resize: cannot resize ", image.Describe(), " to ", height, "x", width));
  }
  if (image.size(0) == height && image.size(1) == width) return image;
  Tensor src = image.Contiguous();
  int c = static_cast<int>(image.size(2));
  Tensor out = Tensor::Empty({height, width, c}, DType::kU8);
  if (!stbir_resize_uint8(src.data<uint8_t>(), static_cast<int>(image.size(1)), static_cast<int>(image.size(0)), 0,
                          out.data<uint8_t>(), static_cast<int>(width), static_cast<int>(height), 0, c)) {
    return absl::InternalError("resize: stb_image_resize failed");
  }
  return out;
}

absl::StatusOr<std::shared_ptr<ImageDataset>> ReadImageFolder(const std::string& root, int64_t height, int64_t width,
                                                              int channels) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return absl::NotFoundError(absl::StrCat(root, ": no such folder"));
  std::vector<std::string> classes;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (entry.is_directory()) classes.push_back(entry.path().filename().string());
  }
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) return absl::InvalidArgumentError(absl::StrCat(root, ": no class subfolders"));
  std::vector<Tensor> images;
  std::vector<int64_t> labels;
  for (size_t k = 0; k < classes.size(); ++k) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(fs::path(root) / classes[k], ec)) {
      std::string ext = entry.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (entry.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp")) {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) {
      absl::StatusOr<std::string> bytes = ReadFileBytes(f.string());
      if (!bytes.ok()) return bytes.status();
      absl::StatusOr<Tensor> img = DecodeImage(*bytes, f.string(), channels);
      if (!img.ok()) return img.status();
      absl::StatusOr<Tensor> resized = ResizeImage(*img, height, width);
      if (!resized.ok()) return resized.status();
      images.push_back(resized->Unsqueeze(0));
      labels.push_back(static_cast<int64_t>(k));
    }
  }
  if (images.empty()) return absl::InvalidArgumentError(absl::StrCat(root, ": no PNG, JPEG or BMP images"));
  return std::make_shared<ImageDataset>(Concat(images, 0), std::move(labels), static_cast<int64_t>(classes.size()),
                                        classes);
}

// ---- text -----------------------------------------------------------------------------

absl::StatusOr<std::vector<std::string>> ParseLines(std::string_view bytes, std::string_view name) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < bytes.size()) {
    size_t end = bytes.find('\n', start);
    if (end == std::string_view::npos) end = bytes.size();
    std::string_view line = bytes.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find('\0') != std::string_view::npos) {
      return Bad(name, absl::StrCat("line ", lines.size() + 1, " holds a NUL byte: not a text file"));
    }
    lines.emplace_back(line);
    start = end + 1;
  }
  return lines;
}

absl::StatusOr<std::vector<std::string>> ReadLines(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  return ParseLines(*bytes, path);
}

namespace {
std::string_view Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string_view::npos ? std::string_view() : s.substr(b, e - b + 1);
}
}  // namespace

absl::StatusOr<std::vector<LabeledText>> ParseLabeledText(std::string_view bytes, std::string_view name) {
  absl::StatusOr<std::vector<std::string>> lines = ParseLines(bytes, name);
  if (!lines.ok()) return lines.status();
  std::vector<LabeledText> out;
  for (size_t i = 0; i < lines->size(); ++i) {
    const std::string& line = (*lines)[i];
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    size_t tab = line.find('\t');
    std::string where = absl::StrCat("line ", i + 1);
    if (tab == std::string::npos) return Bad(name, absl::StrCat(where, " has no tab: expected label<TAB>text"));
    std::string_view label = Trim(std::string_view(line).substr(0, tab));
    std::string_view text = Trim(std::string_view(line).substr(tab + 1));
    if (label.empty()) return Bad(name, absl::StrCat(where, " has an empty label"));
    if (text.empty()) return Bad(name, absl::StrCat(where, " has an empty text"));
    out.push_back({std::string(label), std::string(text), static_cast<int64_t>(i + 1)});
  }
  if (out.empty()) return Bad(name, "holds no example (expected label<TAB>text lines)");
  return out;
}

absl::StatusOr<std::vector<LabeledText>> ReadLabeledText(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileBytes(path);
  if (!bytes.ok()) return bytes.status();
  return ParseLabeledText(*bytes, path);
}

}  // namespace quanta::data

// safetensors reading and writing. The JSON header is parsed by a small strict
// parser of our own (objects, arrays, strings, integers; depth-limited), so that
// a hostile header cannot recurse, allocate or index without a check first.
#include "nn/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/ops.h"
#include "core/utf8.h"

namespace quanta {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit
constexpr int kMaxJsonDepth = 8;

// ---- JSON ---------------------------------------------------------------------------

struct Json {
  enum Kind { kString, kInteger, kArray, kObject, kOther } kind = kOther;
  std::string text;     // kString
  uint64_t integer = 0; // kInteger (non-negative only: safetensors needs no others)
  std::vector<Json> items;          // kArray elements, or kObject member values
  std::vector<std::string> names;   // kObject member names (items[i] is names[i]'s value)
};

class JsonParser {
 public:
  explicit JsonParser(std::string_view s) : s_(s) {}

  absl::Status ParseDocument(Json* out) {
    if (!Value(out, 0)) return Error();
    SkipSpace();
    if (pos_ != s_.size()) return Fail("trailing characters after the JSON object"), Error();
    return absl::OkStatus();
  }

 private:
  absl::Status Error() const {
    return absl::InvalidArgumentError(absl::StrCat("bad JSON header at byte ", pos_, ": ", error_));
  }
  bool Fail(const char* why) {
    if (error_.empty()) error_ = why;
    return false;
  }
  void SkipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r')) ++pos_;
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  bool Value(Json* out, int depth) {
    if (depth > kMaxJsonDepth) return Fail("nested too deeply");
    SkipSpace();
    if (pos_ >= s_.size()) return Fail("unexpected end");
    char c = s_[pos_];
    if (c == '{') return Object(out, depth);
    if (c == '[') return Array(out, depth);
    if (c == '"') {
      out->kind = Json::kString;
      return String(&out->text);
    }
    if (c >= '0' && c <= '9') return Integer(out);
    for (std::string_view word : {"true", "false", "null"}) {
      if (s_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        out->kind = Json::kOther;
        return true;
      }
    }
    return Fail("expected an object, array, string or non-negative integer");
  }

  bool Object(Json* out, int depth) {
    out->kind = Json::kObject;
    ++pos_;
    if (Consume('}')) return true;
    do {
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != '"') return Fail("expected a member name");
      std::string name;
      if (!String(&name)) return false;
      if (!Consume(':')) return Fail("expected ':'");
      Json value;
      if (!Value(&value, depth + 1)) return false;
      out->names.push_back(std::move(name));
      out->items.push_back(std::move(value));
    } while (Consume(','));
    return Consume('}') || Fail("expected ',' or '}'");
  }

  bool Array(Json* out, int depth) {
    out->kind = Json::kArray;
    ++pos_;
    if (Consume(']')) return true;
    do {
      Json item;
      if (!Value(&item, depth + 1)) return false;
      out->items.push_back(std::move(item));
    } while (Consume(','));
    return Consume(']') || Fail("expected ',' or ']'");
  }

  bool Integer(Json* out) {
    out->kind = Json::kInteger;
    uint64_t v = 0;
    size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      if (v > (UINT64_MAX - 9) / 10) return Fail("integer too large");
      v = v * 10 + static_cast<uint64_t>(s_[pos_++] - '0');
    }
    if (pos_ - start > 1 && s_[start] == '0') return Fail("leading zero");
    if (pos_ < s_.size() && (s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E')) {
      return Fail("expected an integer");
    }
    out->integer = v;
    return true;
  }

  bool Hex4(uint32_t* out) {
    if (s_.size() - pos_ < 4) return Fail("short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else return Fail("bad \\u escape");
    }
    *out = v;
    return true;
  }

  bool String(std::string* out) {
    ++pos_;  // opening quote
    while (pos_ < s_.size()) {
      char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return Fail("control character in a string");
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (pos_ >= s_.size()) break;
      char e = s_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': out->push_back(e); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          uint32_t cp;
          if (!Hex4(&cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00) {
            uint32_t low;
            if (s_.substr(pos_, 2) != "\\u") return Fail("unpaired surrogate");
            pos_ += 2;
            if (!Hex4(&low) || low < 0xDC00 || low >= 0xE000) return Fail("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            return Fail("unpaired surrogate");
          }
          AppendUtf8(cp, out);
          break;
        }
        default: return Fail("bad escape");
      }
    }
    return Fail("unterminated string");
  }

  std::string_view s_;
  size_t pos_ = 0;
  std::string error_;
};

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(c);
    }
  }
  return out + "\"";
}

// ---- dtypes ---------------------------------------------------------------------------

struct DTypeName {
  DType dtype;
  const char* name;
};
constexpr DTypeName kDTypeNames[] = {
    {DType::kF32, "F32"}, {DType::kF64, "F64"}, {DType::kF16, "F16"}, {DType::kBF16, "BF16"},
    {DType::kI32, "I32"}, {DType::kI64, "I64"}, {DType::kI8, "I8"},   {DType::kU8, "U8"},
    {DType::kBool, "BOOL"},
    // The safetensors spec's FP8 names (PyTorch's float8_e4m3fn, float8_e5m2,
    // float8_e8m0fnu); its F4 / F6 packings are not Quanta's, so those stay out.
    {DType::kF8E4M3, "F8_E4M3"}, {DType::kF8E5M2, "F8_E5M2"}, {DType::kF8E8M0, "F8_E8M0"},
};

const char* SafetensorsName(DType d) {
  for (const auto& e : kDTypeNames) {
    if (e.dtype == d) return e.name;
  }
  return nullptr;
}

bool FromSafetensorsName(std::string_view name, DType* out) {
  for (const auto& e : kDTypeNames) {
    if (name == e.name) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

absl::Status Problem(std::string_view source, const std::string& what) {
  std::string where(source);
  return absl::InvalidArgumentError(where.empty() ? "safetensors: " + what : "safetensors " + where + ": " + what);
}

}  // namespace

absl::StatusOr<std::string> SerializeSafetensors(const TensorMap& tensors,
                                                 const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  bool first = true;
  auto separator = [&] {
    if (!first) header += ",";
    first = false;
  };
  if (!metadata.empty()) {
    separator();
    header += "\"__metadata__\":{";
    bool first_meta = true;
    for (const auto& [k, v] : metadata) {
      if (!first_meta) header += ",";
      first_meta = false;
      header += Quote(k) + ":" + Quote(v);
    }
    header += "}";
  }
  std::vector<Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") return Problem("", "a tensor may not be named __metadata__");
    const char* dtype = SafetensorsName(t.dtype());
    if (dtype == nullptr) {
      return Problem("", absl::StrCat("tensor \"", name, "\" has dtype ", Name(t.dtype()),
                                      ", which safetensors cannot hold (quantized tensors need the integer-model format)"));
    }
    Tensor c = t.Detach().To(Device::Cpu()).Contiguous();
    uint64_t bytes = static_cast<uint64_t>(StorageBytes(c.dtype(), c.numel()));
    separator();
    header += Quote(name) + ":{\"dtype\":\"" + dtype + "\",\"shape\":[";
    for (int d = 0; d < c.dim(); ++d) header += (d ? "," : "") + std::to_string(c.size(d));
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
    contiguous.push_back(c);
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  out += header;
  out.reserve(out.size() + offset);
  for (const Tensor& c : contiguous) {
    out.append(static_cast<const char*>(c.raw_data()), StorageBytes(c.dtype(), c.numel()));
  }
  return out;
}

absl::StatusOr<Safetensors> ParseSafetensors(std::string_view bytes, std::string_view source) {
  if (bytes.size() < 8) {
    return Problem(source, absl::StrCat("file is ", bytes.size(), " bytes; it must start with an 8-byte header length"));
  }
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > kMaxHeaderBytes) {
    return Problem(source, absl::StrCat("header length ", header_len, " exceeds the ", kMaxHeaderBytes, "-byte limit"));
  }
  if (header_len > bytes.size() - 8) {
    return Problem(source, absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                        bytes.size(), " bytes)"));
  }
  std::string_view header = bytes.substr(8, header_len);
  std::string_view data = bytes.substr(8 + header_len);
  Json root;
  if (absl::Status s = JsonParser(header).ParseDocument(&root); !s.ok()) return Problem(source, std::string(s.message()));
  if (root.kind != Json::kObject) return Problem(source, "the header is not a JSON object");

  Safetensors out;
  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (size_t m = 0; m < root.names.size(); ++m) {
    const std::string& name = root.names[m];
    const Json& entry = root.items[m];
    if (name == "__metadata__") {
      if (entry.kind != Json::kObject) return Problem(source, "__metadata__ is not an object");
      for (size_t i = 0; i < entry.names.size(); ++i) {
        const std::string& k = entry.names[i];
        if (entry.items[i].kind != Json::kString) {
          return Problem(source, absl::StrCat("metadata \"", k, "\" is not a string"));
        }
        out.metadata[k] = entry.items[i].text;
      }
      continue;
    }
    if (out.tensors.count(name)) return Problem(source, absl::StrCat("tensor \"", name, "\" appears twice"));
    if (entry.kind != Json::kObject) return Problem(source, absl::StrCat("tensor \"", name, "\" is not an object"));
    const Json *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
    for (size_t i = 0; i < entry.names.size(); ++i) {
      const std::string& k = entry.names[i];
      const Json& v = entry.items[i];
      if (k == "dtype") dtype = &v;
      else if (k == "shape") shape = &v;
      else if (k == "data_offsets") offsets = &v;
      else return Problem(source, absl::StrCat("tensor \"", name, "\" has an unknown field \"", k, "\""));
    }
    if (!dtype || !shape || !offsets) {
      return Problem(source, absl::StrCat("tensor \"", name, "\" lacks dtype, shape or data_offsets"));
    }
    DType d;
    if (dtype->kind != Json::kString || !FromSafetensorsName(dtype->text, &d)) {
      return Problem(source, absl::StrCat("tensor \"", name, "\" has unknown dtype \"",
                                          dtype->kind == Json::kString ? dtype->text : "?", "\""));
    }
    if (shape->kind != Json::kArray || shape->items.size() > 16) {
      return Problem(source, absl::StrCat("tensor \"", name, "\" has a bad shape"));
    }
    Shape dims;
    uint64_t numel = 1;
    for (const Json& dim : shape->items) {
      if (dim.kind != Json::kInteger || dim.integer > (1ull << 40)) {
        return Problem(source, absl::StrCat("tensor \"", name, "\" has a bad dimension"));
      }
      if (__builtin_mul_overflow(numel, dim.integer, &numel) || numel > (1ull << 40)) {
        return Problem(source, absl::StrCat("tensor \"", name, "\" is too large"));
      }
      dims.push_back(static_cast<int64_t>(dim.integer));
    }
    if (offsets->kind != Json::kArray || offsets->items.size() != 2 || offsets->items[0].kind != Json::kInteger ||
        offsets->items[1].kind != Json::kInteger) {
      return Problem(source, absl::StrCat("tensor \"", name, "\" has malformed data_offsets"));
    }
    uint64_t begin = offsets->items[0].integer, end = offsets->items[1].integer;
    uint64_t need = static_cast<uint64_t>(StorageBytes(d, static_cast<int64_t>(numel)));
    if (begin > end || end > data.size()) {
      return Problem(source, absl::StrCat("tensor \"", name, "\" data_offsets [", begin, ", ", end,
                                          "] fall outside the ", data.size(), "-byte data section"));
    }
    if (end - begin != need) {
      return Problem(source, absl::StrCat("tensor \"", name, "\" holds ", end - begin, " bytes but ",
                                          Name(d), ShapeToString(dims), " needs ", need));
    }
    Tensor t = Tensor::Empty(dims, d);
    if (need > 0) std::memcpy(t.raw_data(), data.data() + begin, need);
    spans.push_back({begin, end, &name});
    out.tensors.emplace(name, std::move(t));
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].begin < spans[i - 1].end) {
      return Problem(source, absl::StrCat("tensors \"", *spans[i - 1].name, "\" and \"", *spans[i].name,
                                          "\" overlap in the data section"));
    }
  }
  return out;
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes) {
  std::string tmp = path + ".tmp-XXXXXX";
  int fd = mkstemp(tmp.data());
  if (fd < 0) return absl::InternalError(absl::StrCat("save ", path, ": cannot create a temporary file: ", std::strerror(errno)));
  auto fail = [&](const char* what) {
    int err = errno;
    close(fd);
    unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("save ", path, ": ", what, ": ", std::strerror(err)));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write failed");
    done += static_cast<size_t>(n);
  }
  if (fchmod(fd, 0644) != 0) return fail("chmod failed");
  if (fsync(fd) != 0) return fail("fsync failed");
  if (close(fd) != 0) {
    unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("save ", path, ": close failed: ", std::strerror(errno)));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("save ", path, ": rename failed: ", std::strerror(err)));
  }
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (dir.empty()) dir = "/";
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    fsync(dfd);  // makes the rename durable; a failure here loses nothing already saved
    close(dfd);
  }
  return absl::OkStatus();
}

absl::Status SaveSafetensors(const std::string& path, const TensorMap& tensors,
                             const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> bytes = SerializeSafetensors(tensors, metadata);
  if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat("save ", path, ": ", bytes.status().message()));
  return WriteFileAtomically(path, *bytes);
}

absl::StatusOr<Safetensors> LoadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("safetensors ", path, ": cannot open: ", std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("safetensors ", path, ": read failed"));
  return ParseSafetensors(ss.str(), path);
}

}  // namespace quanta

// MD5, tar, extraction and download. The tar reader trusts nothing: sizes are
// bounded by the bytes present, names are normalized and checked, links and
// devices are refused.
#include "data/archive.h"

#include <curl/curl.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "data/readers.h"

namespace quanta::data {
namespace {

namespace fs = std::filesystem;

absl::Status Bad(std::string_view name, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(name), ": ", what));
}

// ---- MD5 (RFC 1321) ---------------------------------------------------------------------

constexpr uint32_t kShift[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                                 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};
constexpr uint32_t kK[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};

// ---- tar ------------------------------------------------------------------------------------

bool ParseOctal(const char* p, size_t n, uint64_t* out) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\0')) ++i;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i) {
    if (v > (UINT64_MAX >> 3)) return false;
    v = (v << 3) | static_cast<uint64_t>(p[i] - '0');
  }
  for (; i < n; ++i) {
    if (p[i] != ' ' && p[i] != '\0') return false;  // base-256 sizes (huge files) are refused too
  }
  *out = v;
  return true;
}

std::string Field(const char* p, size_t n) { return std::string(p, strnlen(p, n)); }

// "a/./b/" -> "a/b"; empty when the name is absolute or climbs out with "..".
std::string NormalizeName(const std::string& raw) {
  if (raw.empty() || raw[0] == '/') return "";
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= raw.size()) {
    size_t end = raw.find('/', start);
    if (end == std::string::npos) end = raw.size();
    std::string part = raw.substr(start, end - start);
    start = end + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return "";
    parts.push_back(part);
  }
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : "/") + p;
  return out;
}

}  // namespace

std::string Md5Hex(std::string_view bytes) {
  uint32_t a0 = 0x67452301, b0 = 0xefcdab89, c0 = 0x98badcfe, d0 = 0x10325476;
  std::string msg(bytes);
  uint64_t bits = static_cast<uint64_t>(bytes.size()) * 8;
  msg.push_back(static_cast<char>(0x80));
  while (msg.size() % 64 != 56) msg.push_back('\0');
  for (int i = 0; i < 8; ++i) msg.push_back(static_cast<char>(bits >> (8 * i)));
  for (size_t chunk = 0; chunk < msg.size(); chunk += 64) {
    uint32_t m[16];
    std::memcpy(m, msg.data() + chunk, 64);  // little-endian words
    uint32_t a = a0, b = b0, c = c0, d = d0;
    for (uint32_t i = 0; i < 64; ++i) {
      uint32_t f, g;
      if (i < 16) f = (b & c) | (~b & d), g = i;
      else if (i < 32) f = (d & b) | (~d & c), g = (5 * i + 1) % 16;
      else if (i < 48) f = b ^ c ^ d, g = (3 * i + 5) % 16;
      else f = c ^ (b | ~d), g = (7 * i) % 16;
      f += a + kK[i] + m[g];
      a = d;
      d = c;
      c = b;
      b += (f << kShift[i]) | (f >> (32 - kShift[i]));
    }
    a0 += a, b0 += b, c0 += c, d0 += d;
  }
  std::string hex;
  for (uint32_t word : {a0, b0, c0, d0}) {
    for (int i = 0; i < 4; ++i) absl::StrAppend(&hex, absl::Hex((word >> (8 * i)) & 0xff, absl::kZeroPad2));
  }
  return hex;
}

absl::StatusOr<std::vector<TarEntry>> ParseTar(std::string_view bytes, std::string_view name) {
  std::vector<TarEntry> entries;
  std::string long_name;  // from a GNU 'L' entry or a pax 'path' record, for the next entry
  size_t pos = 0;
  while (true) {
    if (pos + 512 > bytes.size()) return Bad(name, absl::StrCat("truncated tar archive at byte ", pos));
    const char* h = bytes.data() + pos;
    if (std::all_of(h, h + 512, [](char c) { return c == '\0'; })) break;  // end-of-archive block
    uint64_t size = 0, checksum = 0;
    if (!ParseOctal(h + 124, 12, &size) || !ParseOctal(h + 148, 8, &checksum)) {
      return Bad(name, absl::StrCat("tar header at byte ", pos, " has a malformed size or checksum"));
    }
    uint64_t sum = 0;
    for (int i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[i]);
    if (sum != checksum) return Bad(name, absl::StrCat("tar header at byte ", pos, " fails its checksum"));
    uint64_t data_start = pos + 512;
    if (size > bytes.size() - data_start) {
      return Bad(name, absl::StrCat("tar entry at byte ", pos, " claims ", size, " bytes past the end of the archive"));
    }
    std::string_view data = bytes.substr(data_start, size);
    pos = data_start + (size + 511) / 512 * 512;
    char type = h[156];
    std::string raw = Field(h, 100);
    if (std::string(h + 257, 5) == "ustar") {
      std::string prefix = Field(h + 345, 155);
      if (!prefix.empty()) raw = prefix + "/" + raw;
    }
    if (type == 'L') {  // GNU long name for the next entry
      long_name = std::string(data.substr(0, strnlen(data.data(), data.size())));
      continue;
    }
    if (type == 'x' || type == 'g') {  // pax headers: "len key=value\n" records
      size_t start = 0;
      while (type == 'x' && start < data.size()) {
        size_t end = data.find('\n', start);
        if (end == std::string_view::npos) end = data.size();
        std::string_view rec = data.substr(start, end - start);
        size_t eq = rec.find(" path=");
        if (eq != std::string_view::npos) long_name = std::string(rec.substr(eq + 6));
        start = end + 1;
      }
      continue;
    }
    if (!long_name.empty()) {
      raw = long_name;
      long_name.clear();
    }
    std::string normalized = NormalizeName(raw);
    if (normalized.empty()) {
      return Bad(name, absl::StrCat("tar entry \"", raw, "\" escapes the target folder (absolute or uses ..)"));
    }
    if (type == '5') {
      entries.push_back({normalized, {}, true});
    } else if (type == '0' || type == '\0' || type == '7') {
      entries.push_back({normalized, data, false});
    } else {
      return Bad(name, absl::StrCat("tar entry \"", raw, "\" has unsupported type '", std::string(1, type),
                                    "' (links and devices are refused)"));
    }
  }
  return entries;
}

absl::Status ExtractTarGz(const std::string& archive_path, const std::string& target_dir) {
  absl::StatusOr<std::string> gz = ReadFileBytes(archive_path);
  if (!gz.ok()) return gz.status();
  absl::StatusOr<std::string> tar = Gunzip(*gz, archive_path);
  if (!tar.ok()) return tar.status();
  absl::StatusOr<std::vector<TarEntry>> entries = ParseTar(*tar, archive_path);
  if (!entries.ok()) return entries.status();
  std::error_code ec;
  fs::create_directories(target_dir, ec);
  std::string tmp_template = target_dir + "/.unpack-XXXXXX";
  if (mkdtemp(tmp_template.data()) == nullptr) {
    return absl::InternalError(absl::StrCat(target_dir, ": cannot create a temporary folder: ", std::strerror(errno)));
  }
  fs::path tmp = tmp_template;
  auto fail = [&](const std::string& why) {
    fs::remove_all(tmp, ec);
    return absl::InternalError(absl::StrCat(archive_path, ": ", why));
  };
  for (const TarEntry& e : *entries) {
    fs::path out = tmp / e.name;
    if (e.is_dir) {
      fs::create_directories(out, ec);
      if (ec) return fail(absl::StrCat("cannot create ", out.string(), ": ", ec.message()));
      continue;
    }
    fs::create_directories(out.parent_path(), ec);
    std::ofstream f(out, std::ios::binary | std::ios::trunc);
    f.write(e.data.data(), static_cast<std::streamsize>(e.data.size()));
    f.close();
    if (!f) return fail(absl::StrCat("cannot write ", out.string()));
  }
  for (const auto& top : fs::directory_iterator(tmp, ec)) {
    fs::path dest = fs::path(target_dir) / top.path().filename();
    if (fs::exists(dest, ec)) return fail(absl::StrCat(dest.string(), " already exists; not replacing it"));
  }
  for (const auto& top : fs::directory_iterator(tmp, ec)) {
    fs::rename(top.path(), fs::path(target_dir) / top.path().filename(), ec);
    if (ec) return fail(absl::StrCat("cannot move ", top.path().string(), " into place: ", ec.message()));
  }
  fs::remove_all(tmp, ec);
  return absl::OkStatus();
}

absl::Status DownloadFile(const std::string& url, const std::string& path) {
  static const bool initialized = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  if (!initialized) return absl::InternalError("download: libcurl failed to initialize");
  std::string tmp = path + ".part-XXXXXX";
  int fd = mkstemp(tmp.data());
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": cannot create a temporary file: ", std::strerror(errno)));
  FILE* f = fdopen(fd, "wb");
  CURL* curl = curl_easy_init();
  char error[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 20L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);  // give up below 1 KiB/s ...
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);     // ... for a minute
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, f);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  CURLcode rc = curl_easy_perform(curl);
  curl_easy_cleanup(curl);
  bool closed = std::fclose(f) == 0;
  if (rc != CURLE_OK || !closed) {
    std::remove(tmp.c_str());
    return absl::UnavailableError(absl::StrCat("download ", url, " failed: ", error[0] ? error : curl_easy_strerror(rc)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": rename failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status EnsureCifar100(const std::string& data_dir, const std::string& url, const std::string& md5) {
  std::error_code ec;
  fs::path dir = fs::path(data_dir) / "cifar-100-binary";
  if (fs::exists(dir / "train.bin", ec) && fs::exists(dir / "test.bin", ec)) return absl::OkStatus();
  fs::create_directories(data_dir, ec);
  std::string archive = (fs::path(data_dir) / "cifar-100-binary.tar.gz").string();
  std::string manual = absl::StrCat("download ", kCifar100Url, " (MD5 ", kCifar100Md5, ") and put it at ", archive,
                                    ", or unpack it so that ", (dir / "train.bin").string(), " exists");
  if (!fs::exists(archive, ec)) {
    absl::Status s = DownloadFile(url, archive);
    if (!s.ok()) return absl::UnavailableError(absl::StrCat(s.message(), ". Without a network: ", manual));
  }
  absl::StatusOr<std::string> bytes = ReadFileBytes(archive);
  if (!bytes.ok()) return bytes.status();
  std::string got = Md5Hex(*bytes);
  if (got != md5) {
    // Never delete what the user may have put there: move it aside, under a
    // name that says why, so that the next run downloads (or asks) afresh.
    std::string aside = absl::StrCat(archive, ".md5-mismatch-", got.substr(0, 8));
    for (int n = 1; fs::exists(aside, ec); ++n) aside = absl::StrCat(archive, ".md5-mismatch-", got.substr(0, 8), "-", n);
    fs::rename(archive, aside, ec);
    if (ec) {
      return absl::DataLossError(absl::StrCat(archive, ": MD5 ", got, " is not the published ", md5,
                                              "; the file is left in place (moving it aside failed: ", ec.message(),
                                              "). ", manual));
    }
    return absl::DataLossError(absl::StrCat(archive, ": MD5 ", got, " is not the published ", md5,
                                            "; the file was moved aside to ", aside, ". ", manual));
  }
  if (absl::Status s = ExtractTarGz(archive, data_dir); !s.ok()) return s;
  if (!fs::exists(dir / "train.bin", ec) || !fs::exists(dir / "test.bin", ec)) {
    return absl::DataLossError(absl::StrCat(archive, ": unpacked, but ", dir.string(), " lacks train.bin or test.bin"));
  }
  return absl::OkStatus();
}

}  // namespace quanta::data

// Tiny files in every format the readers take, made by the tests themselves.
#pragma once

#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "stb/stb_image_write.h"

namespace quanta::data::testing {

inline std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

// CIFAR records: pixel (c, p) of record i is (i * 7 + c * 3 + p) % 256.
inline std::string CifarBytes(int n, bool cifar100, const std::vector<int>& labels) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    if (cifar100) out.push_back(static_cast<char>(labels[i] % 20));  // coarse
    out.push_back(static_cast<char>(labels[i]));
    for (int c = 0; c < 3; ++c) {
      for (int p = 0; p < 1024; ++p) out.push_back(static_cast<char>((i * 7 + c * 3 + p) % 256));
    }
  }
  return out;
}

inline std::string Be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

inline std::string IdxImages(int n, int h, int w) {
  std::string out = std::string("\0\0\x08\x03", 4) + Be32(n) + Be32(h) + Be32(w);
  for (int i = 0; i < n * h * w; ++i) out.push_back(static_cast<char>(i % 251));
  return out;
}

inline std::string IdxLabels(const std::vector<int>& labels) {
  std::string out = std::string("\0\0\x08\x01", 4) + Be32(static_cast<uint32_t>(labels.size()));
  for (int l : labels) out.push_back(static_cast<char>(l));
  return out;
}

inline std::string Gzip(const std::string& bytes) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, bytes.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// A ustar archive; entries ending in '/' are folders, type '2' makes a symlink.
struct TarFile {
  std::string name, data;
  char type = '0';
};
inline std::string Tar(const std::vector<TarFile>& files) {
  std::string out;
  for (const TarFile& f : files) {
    char h[512] = {};
    std::strncpy(h, f.name.c_str(), 99);
    std::snprintf(h + 100, 8, "%07o", 0644);
    std::snprintf(h + 108, 8, "%07o", 0);
    std::snprintf(h + 116, 8, "%07o", 0);
    std::snprintf(h + 124, 12, "%011o", static_cast<unsigned>(f.data.size()));
    std::snprintf(h + 136, 12, "%011o", 0);
    h[156] = f.type;
    std::memcpy(h + 257, "ustar\0" "00", 8);
    std::memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : std::string(h, 512)) sum += c;
    std::snprintf(h + 148, 8, "%06o", sum);
    out.append(h, 512);
    out += f.data;
    out.append((512 - f.data.size() % 512) % 512, '\0');
  }
  out.append(1024, '\0');
  return out;
}

inline std::string Png(int w, int h, int channels, int seed) {
  std::vector<unsigned char> pixels(w * h * channels);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<unsigned char>((i * 13 + seed) % 256);
  std::string out;
  stbi_write_png_to_func([](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); },
                         &out, w, h, channels, pixels.data(), w * channels);
  return out;
}

inline std::string Bmp(int w, int h, int seed) {
  std::vector<unsigned char> pixels(w * h * 3);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<unsigned char>((i * 7 + seed) % 256);
  std::string out;
  stbi_write_bmp_to_func([](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); },
                         &out, w, h, 3, pixels.data());
  return out;
}

}  // namespace quanta::data::testing

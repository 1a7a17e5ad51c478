// A block of device memory shared by every tensor that views it. Allocated and
// freed through the device's backend; never resized.
//
//   auto s = Storage::Allocate(Device::Cpu(), 64);  // 64 bytes
//   void* p = s->data();
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "core/device.h"

namespace quanta {

class Backend;

class Storage {
 public:
  static std::shared_ptr<Storage> Allocate(const Device& device, size_t bytes);
  // Memory that something else owns (a NumPy array, a DLPack producer):
  // `release` runs once when the last tensor viewing it is gone, instead of the
  // backend's Free. The caller keeps the memory valid until then.
  static std::shared_ptr<Storage> Wrap(const Device& device, void* data, size_t bytes, std::function<void()> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  const Device& device() const { return device_; }
  Backend& backend() const { return *backend_; }
  // Note [Constant storage]: a storage marked constant promises that its bytes
  // never change again (a converted model's weights). Backends may keep derived
  // copies of it (oneDNN's reordered weights) until it is freed; Dispatch refuses
  // to write into it.
  void MarkConstant() { constant_ = true; }
  bool constant() const { return constant_; }

 private:
  Storage(Backend* backend, const Device& device, void* data, size_t bytes)
      : backend_(backend), device_(device), data_(data), bytes_(bytes) {}

  Backend* backend_;
  Device device_;
  void* data_;
  size_t bytes_;
  bool constant_ = false;
  std::function<void()> release_;  // Wrap: returns the memory to its owner
};

}  // namespace quanta

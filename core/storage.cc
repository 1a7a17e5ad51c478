// Storage lifetime: memory comes from and returns to the device's backend.
#include "core/storage.h"

#include "core/backend.h"

namespace quanta {

std::shared_ptr<Storage> Storage::Allocate(const Device& device, size_t bytes) {
  Backend& backend = GetBackend(device);
  void* data = bytes == 0 ? nullptr : backend.Allocate(bytes, device.index);
  return std::shared_ptr<Storage>(new Storage(&backend, device, data, bytes));
}

std::shared_ptr<Storage> Storage::Wrap(const Device& device, void* data, size_t bytes, std::function<void()> release) {
  auto storage = std::shared_ptr<Storage>(new Storage(&GetBackend(device), device, data, bytes));
  storage->release_ = release ? std::move(release) : [] {};
  return storage;
}

Storage::~Storage() {
  if (release_) {
    release_();
  } else if (data_ != nullptr) {
    backend_->Free(data_, bytes_, device_.index);
  }
}

}  // namespace quanta

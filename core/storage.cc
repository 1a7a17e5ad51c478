// Storage lifetime: memory comes from and returns to the device's backend.
#include "core/storage.h"

#include "core/backend.h"

namespace quanta {

std::shared_ptr<Storage> Storage::Allocate(const Device& device, size_t bytes) {
  Backend& backend = GetBackend(device);
  void* data = bytes == 0 ? nullptr : backend.Allocate(bytes, device.index);
  return std::shared_ptr<Storage>(new Storage(&backend, device, data, bytes));
}

Storage::~Storage() {
  if (data_ != nullptr) backend_->Free(data_, bytes_, device_.index);
}

}  // namespace quanta

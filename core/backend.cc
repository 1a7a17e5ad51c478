// The backend registry and the thread-count setting shared by all backends.
#include "core/backend.h"

#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"

#include "core/error.h"
#include "core/parallel.h"

namespace quanta {
namespace {

std::array<std::unique_ptr<Backend>, kNumDeviceTypes>& Registry() {
  static auto* registry = new std::array<std::unique_ptr<Backend>, kNumDeviceTypes>();
  return *registry;
}

constexpr const char* kOpNames[] = {
#define QUANTA_OP_NAME(name, str) str,
    QUANTA_OPS(QUANTA_OP_NAME)
#undef QUANTA_OP_NAME
};
static_assert(std::size(kOpNames) == kNumOps);

}  // namespace

void Backend::SetOption(const std::string& key, const std::string& value) {
  QUANTA_CHECK(false, "backend ", Device{type_, 0}.ToString(), ": no option \"", key, "\" (value \"", value, "\")");
}

const char* OpName(Op op) { return kOpNames[static_cast<int>(op)]; }

void Backend::NoteFallback(Op op, const std::string& what) {
  fallbacks_[static_cast<int>(op)].fetch_add(1, std::memory_order_relaxed);
  std::string key = absl::StrCat(OpName(op), "|", what);
  std::lock_guard<std::mutex> lock(warned_mu_);
  if (!warned_.insert(key).second) return;
  std::fprintf(stderr, "quanta: warning: %s on %s runs the reference kernel (the fast path refused %s)\n", OpName(op),
               Device{type_, 0}.ToString().c_str(), what.c_str());
}

int64_t Backend::FallbackCount(Op op) const { return fallbacks_[static_cast<int>(op)].load(std::memory_order_relaxed); }

void Backend::ResetFallbackCounts() {
  for (auto& n : fallbacks_) n.store(0, std::memory_order_relaxed);
}

void RegisterBackend(std::unique_ptr<Backend> backend) {
  Registry()[static_cast<int>(backend->type())] = std::move(backend);
}

Backend* FindBackend(DeviceType type) { return Registry()[static_cast<int>(type)].get(); }

Backend& GetBackend(const Device& device) {
  Backend* backend = FindBackend(device.type);
  QUANTA_CHECK(backend != nullptr, "device ", device.ToString(),
               ": no backend linked in (CUDA needs --config=cuda and //backends/cuda)");
  std::string why = backend->Unavailable();
  QUANTA_CHECK(why.empty(), "device ", device.ToString(), ": ", why);
  QUANTA_CHECK(device.index >= 0 && device.index < backend->DeviceCount(), "device ",
               device.ToString(), ": index out of range (", backend->DeviceCount(),
               " present)");
  return *backend;
}

bool IsAvailable(const Device& device) {
  Backend* backend = FindBackend(device.type);
  return backend != nullptr && backend->Unavailable().empty() && device.index >= 0 &&
         device.index < backend->DeviceCount();
}

void SetNumThreads(int n) {
  QUANTA_CHECK(n >= 1, "SetNumThreads: need at least one thread, got ", n);
  internal::SetPoolThreads(n);
  for (auto& backend : Registry()) {
    if (backend) backend->SetNumThreads(n);
  }
}

int GetNumThreads() { return internal::PoolThreads(); }

}  // namespace quanta

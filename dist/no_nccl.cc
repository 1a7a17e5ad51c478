// The default (non-CUDA) build: no NCCL engine; dist::Init(kNccl) says so.
#include "dist/communicator.h"

namespace quanta::dist::internal {
bool NcclCompiled() { return false; }
absl::StatusOr<std::shared_ptr<Communicator>> InitNccl(const std::shared_ptr<Communicator>&) {
  return absl::FailedPreconditionError("dist::Init(kNccl): this build has no CUDA (build with --config=cuda)");
}
}  // namespace quanta::dist::internal

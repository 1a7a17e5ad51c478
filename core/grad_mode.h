// What core knows of autograd and autocast: thread-local modes and the recorder
// hook. Core's frontends call Record after every op; autograd/ installs the
// recorder that builds the graph. Core never differentiates anything itself.
//
//   { NoGradGuard no_grad; y = Matmul(x, w); }      // nothing recorded
//   { AutocastGuard amp(DType::kBF16); y = Conv2d(x, w); }  // conv runs in bf16
#pragma once

#include <optional>
#include <span>

#include "core/backend.h"
#include "core/dtype.h"

namespace quanta {

bool GradModeEnabled();

// Turns recording off for its scope (evaluation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Inside its scope matmul and conv2d cast f32 operands to `dtype` (bf16 or f16)
// and compute in it; everything else runs as written. Master weights stay f32:
// the casts are recorded, so their gradients come back in f32.
class AutocastGuard {
 public:
  explicit AutocastGuard(DType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  std::optional<DType> previous_;
};
std::optional<DType> AutocastDType();

// Builds graph nodes: installed once by autograd/ (at load time).
using Recorder = void (*)(Op op, std::span<const Tensor> inputs, std::span<Tensor> outputs,
                          const OpAttrs& attrs);
void SetRecorder(Recorder recorder);

// Records op when grad mode is on, a recorder is installed and an input requires
// grad. Called by Dispatch and by the frontends of structural ops.
void Record(Op op, std::span<const Tensor> inputs, std::span<Tensor> outputs,
            const OpAttrs& attrs = {});

}  // namespace quanta

// Thread-local grad and autocast modes, and the recorder hook.
#include "core/grad_mode.h"

#include "core/error.h"
#include "core/tensor.h"

namespace quanta {
namespace {

thread_local bool grad_mode = true;
thread_local std::optional<DType> autocast_dtype;
Recorder recorder = nullptr;

}  // namespace

bool GradModeEnabled() { return grad_mode; }
NoGradGuard::NoGradGuard() : previous_(grad_mode) { grad_mode = false; }
NoGradGuard::~NoGradGuard() { grad_mode = previous_; }

AutocastGuard::AutocastGuard(DType dtype) : previous_(autocast_dtype) {
  QUANTA_CHECK(dtype == DType::kBF16 || dtype == DType::kF16, "autocast: dtype ", Name(dtype),
               " is not bf16 or f16");
  autocast_dtype = dtype;
}
AutocastGuard::~AutocastGuard() { autocast_dtype = previous_; }
std::optional<DType> AutocastDType() { return autocast_dtype; }

void SetRecorder(Recorder r) { recorder = r; }

void Record(Op op, std::span<const Tensor> inputs, std::span<Tensor> outputs, const OpAttrs& attrs) {
  if (!grad_mode || recorder == nullptr) return;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) {
      recorder(op, inputs, outputs, attrs);
      return;
    }
  }
}

}  // namespace quanta

// oneDNN fast paths for the CPU backend: matmul, conv2d and both conv2d backwards
// in f32 and bf16 (f16 where the CPU has kernels).
// Descriptors are built once per shape and cached (STYLE.md §9); data pointers are
// bound at execution. A call oneDNN cannot take falls back to the reference kernel.
#pragma once

#include <cstddef>
#include <string>

#include "backends/cpu/cpu_backend.h"
#include "core/backend.h"

namespace quanta::cpu {

void OneDnnMatmul(const KernelCall& c);
void OneDnnConv2d(const KernelCall& c);
void OneDnnConv2dBackwardInput(const KernelCall& c);
void OneDnnConv2dBackwardWeight(const KernelCall& c);
void OneDnnQuantizedMatmul(const KernelCall& c);
void OneDnnQuantizedConv2d(const KernelCall& c);
void OneDnnSetNumThreads(int n);
// Note [Winograd convolutions] (onednn.cc): on by default; the backend's
// SetOption("winograd", "0"/"1").
void OneDnnSetWinograd(bool on);
// Note [int8 convolution implementations] (onednn.cc): "rule" by default; the
// backend's SetOption("int8_implementation", "rule"/"first"/a name prefix).
void OneDnnSetInt8Implementation(const std::string& mode);
// Drops what the weight cache holds for storage at `data` (Note [Weight cache]).
void OneDnnForget(const void* data);

}  // namespace quanta::cpu

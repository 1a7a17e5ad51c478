// Tensor: a small value type — shared storage, shape, strides, offset, dtype, and
// for quantized dtypes its QuantParams. Copies share storage (like torch.Tensor);
// views share it too. No autograd state here: that hangs off a pointer in
// autograd/. Ops are free functions in core/ops.h.
//
//   Tensor x = Tensor::FromVector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
//   Tensor t = x.Transpose(0, 1);            // (3, 2) view, same storage
//   Tensor c = t.Contiguous();               // copies: t is not contiguous
//   std::vector<float> v = c.ToVector<float>();
//   std::cout << x;                          // tensor([[1, 2, 3], [4, 5, 6]], dtype=f32)
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/quant_params.h"
#include "core/shape.h"
#include "core/storage.h"

namespace quanta {

struct AutogradMeta;

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // ---- creation ------------------------------------------------------------
  // Uninitialized storage. Quantized dtypes need their parameters.
  static Tensor Empty(const Shape& shape, DType dtype = DType::kF32,
                      const Device& device = Device::Cpu());
  static Tensor Empty(const Shape& shape, DType dtype, const Device& device,
                      const QuantParams& qparams);
  // Copies host values of C++ type T (float, double, int32_t, int64_t, int8_t,
  // uint8_t, bool, Half, BFloat16) into a new tensor of T's dtype.
  template <typename T>
  static Tensor FromVector(const std::vector<T>& values, const Shape& shape,
                           const Device& device = Device::Cpu());
  // A quantized tensor from its integer values (range-checked, packed for qint4).
  static Tensor FromQuantized(const std::vector<int32_t>& values, const Shape& shape,
                              DType dtype, const QuantParams& qparams,
                              const Device& device = Device::Cpu());

  // A tensor over memory that something else owns (torch::from_blob): `data` is
  // element 0, strides are in elements and non-negative, and `release` runs when
  // the last tensor viewing the memory is gone. Not for quantized dtypes.
  static Tensor FromBlob(void* data, const Shape& shape, const Strides& strides, DType dtype,
                         const Device& device, std::function<void()> release);

  // ---- metadata ------------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Strides& strides() const { return strides_; }
  int dim() const { return static_cast<int>(shape_.size()); }
  int64_t size(int64_t d) const;
  int64_t stride(int64_t d) const;
  int64_t numel() const { return NumElements(shape_); }
  int64_t offset() const { return offset_; }  // in elements
  DType dtype() const { return dtype_; }
  Device device() const;
  bool is_contiguous() const;
  // 4-D with memory in (N, H, W, C) order: what int8 convolutions read and write
  // without a layout change.
  bool is_channels_last() const;
  // Channels-last memory that asks for channels-last results (PyTorch's
  // suggest_memory_format): channels-last and not contiguous, or, with one
  // channel (where both hold), a channel stride of 1 as ChannelsLast() gives it.
  // Convolutions, batch norm and elementwise ops on the CPU keep such inputs
  // channels-last.
  bool suggests_channels_last() const;
  bool is_quantized() const { return IsQuantized(dtype_); }
  const QuantParams& qparams() const;  // throws unless quantized
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool SharesStorageWith(const Tensor& other) const { return storage_ == other.storage_; }
  // "f32[2, 3]" or "qint8[4] cuda:0": how error messages name a tensor.
  std::string Describe() const;

  // Address of the first element (CPU or device memory). For qint4, the byte
  // holding element 0 of storage; index with offset() and LoadQInt4.
  void* raw_data() const;
  template <typename T>
  T* data() const;  // CPU only, dtype must match T

  // ---- views (share storage) -------------------------------------------------
  Tensor View(const Shape& shape) const;     // needs compatible strides; one dim may be -1
  Tensor Reshape(const Shape& shape) const;  // View when possible, else a copy
  Tensor Permute(const std::vector<int64_t>& dims) const;
  Tensor Transpose(int64_t d0, int64_t d1) const;
  Tensor Narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor Slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor Select(int64_t dim, int64_t index) const;  // drops dim
  Tensor Expand(const Shape& shape) const;          // -1 keeps a dim; stride 0 where stretched
  Tensor Squeeze() const;
  Tensor Squeeze(int64_t dim) const;
  Tensor Unsqueeze(int64_t dim) const;
  Tensor Flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  // A view with explicit geometry over the same storage (checked against its size).
  // Not recorded for autograd: the result is detached (kernels use it internally).
  Tensor AsStrided(const Shape& shape, const Strides& strides, int64_t offset) const;

  // ---- copies ----------------------------------------------------------------
  Tensor Contiguous() const;  // *this when already contiguous
  Tensor ChannelsLast() const;  // (N, C, H, W) with channels-last memory; *this when already so
  Tensor Clone() const;
  Tensor To(DType dtype) const;  // cast (f16/bf16 round to nearest even)
  Tensor To(const Device& device) const;
  // Copies src into *this (broadcast, cast, across devices). Shapes must broadcast.
  void CopyFrom(const Tensor& src);

  // ---- reading values --------------------------------------------------------
  template <typename T>
  std::vector<T> ToVector() const;  // converts from any non-quantized dtype
  template <typename T>
  T item() const;                  // one element
  std::vector<int32_t> IntRepr() const;  // a quantized tensor's integer values

  std::string ToString() const;

  // ---- autograd (the graph itself lives in autograd/) ------------------------
  bool requires_grad() const;
  // Marks a floating tensor as a leaf whose gradient accumulates in grad().
  Tensor& SetRequiresGrad(bool requires_grad = true);
  // The accumulated gradient of a leaf (undefined before the first backward).
  Tensor grad() const;
  void SetGrad(const Tensor& grad);
  bool is_leaf() const;
  // The same storage and geometry, cut from the graph.
  Tensor Detach() const;
  const std::shared_ptr<AutogradMeta>& autograd_meta() const { return autograd_; }
  void SetAutogradMeta(std::shared_ptr<AutogradMeta> meta) { autograd_ = std::move(meta); }

 private:
  void CheckViewable(const char* op) const;
  Tensor MakeView(const Shape& shape, const Strides& strides, int64_t offset) const;
  void CopyInto(Tensor& out) const;  // cast/broadcast copy of *this into out, recorded

  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Strides strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::kF32;
  std::shared_ptr<const QuantParams> qparams_;  // quantized dtypes only
  std::shared_ptr<AutogradMeta> autograd_;      // null unless autograd touched it
};

struct GradNode;  // autograd/: one recorded op

// Autograd state, shared by every copy of a Tensor (not by its views).
struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;                        // leaves: the accumulated gradient
  std::shared_ptr<GradNode> grad_fn;  // non-leaves: the op that produced it
  int output_index = 0;               // which output of grad_fn
  // Called with each gradient computed for this tensor; may return a replacement.
  std::vector<std::function<Tensor(const Tensor&)>> hooks;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace quanta

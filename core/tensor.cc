// Tensor creation, views (pure stride arithmetic) and copies (through the Copy op).
#include "core/tensor.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/backend.h"
#include "core/grad_mode.h"
#include "core/ops.h"

namespace quanta {
namespace {

int64_t WrapDim(const char* op, const Tensor& t, int64_t dim, int64_t rank) {
  int d = WrapDimOrNeg(dim, rank);
  QUANTA_CHECK(d >= 0, op, ": dim ", dim, " out of range for ", t.Describe());
  return d;
}

// Records a structural op (a view) so that gradients flow through it.
Tensor RecordView(Op op, const Tensor& base, Tensor view, const OpAttrs& attrs = {}) {
  Record(op, {&base, 1}, {&view, 1}, attrs);
  return view;
}

// Elements the storage holds (two per byte for qint4).
int64_t StorageElements(const Storage& s, DType dtype) {
  return static_cast<int64_t>(s.bytes()) * 8 / Info(dtype).bits;
}

void CheckQuantParams(const QuantParams& q, const Shape& shape, DType dtype) {
  QUANTA_CHECK(!q.scales.empty() && q.scales.size() == q.zero_points.size(),
               "quantized tensor ", Name(dtype), ShapeToString(shape),
               ": need as many scales as zero points (got ", q.scales.size(), " and ",
               q.zero_points.size(), ")");
  if (q.scheme == QScheme::kPerTensor) {
    QUANTA_CHECK(q.scales.size() == 1, "quantized tensor ", Name(dtype), ShapeToString(shape),
                 ": per-tensor parameters hold one scale, got ", q.scales.size());
  } else {
    QUANTA_CHECK(q.axis >= 0 && q.axis < static_cast<int>(shape.size()) &&
                     static_cast<int64_t>(q.scales.size()) == shape[q.axis],
                 "quantized tensor ", Name(dtype), ShapeToString(shape),
                 ": per-channel axis ", q.axis, " needs one scale per channel, got ",
                 q.scales.size());
  }
  for (size_t i = 0; i < q.scales.size(); ++i) {
    QUANTA_CHECK(q.scales[i] > 0, "quantized tensor ", Name(dtype), ShapeToString(shape),
                 ": scale ", q.scales[i], " must be positive");
    QUANTA_CHECK(q.zero_points[i] >= Info(dtype).qmin && q.zero_points[i] <= Info(dtype).qmax,
                 "quantized tensor ", Name(dtype), ShapeToString(shape), ": zero point ",
                 q.zero_points[i], " outside [", Info(dtype).qmin, ", ", Info(dtype).qmax, "]");
  }
}

}  // namespace

// ---- creation ------------------------------------------------------------------

Tensor Tensor::Empty(const Shape& shape, DType dtype, const Device& device) {
  QUANTA_CHECK(!IsQuantized(dtype), "empty: ", Name(dtype), ShapeToString(shape),
               " needs quantization parameters");
  for (int64_t s : shape) {
    QUANTA_CHECK(s >= 0, "empty: negative size in shape ", ShapeToString(shape));
  }
  Tensor t;
  t.storage_ = Storage::Allocate(device, StorageBytes(dtype, NumElements(shape)));
  t.shape_ = shape;
  t.strides_ = ContiguousStrides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::Empty(const Shape& shape, DType dtype, const Device& device,
                     const QuantParams& qparams) {
  QUANTA_CHECK(IsQuantized(dtype), "empty: ", Name(dtype), " is not a quantized dtype");
  CheckQuantParams(qparams, shape, dtype);
  Tensor t;
  t.storage_ = Storage::Allocate(device, StorageBytes(dtype, NumElements(shape)));
  t.shape_ = shape;
  t.strides_ = ContiguousStrides(shape);
  t.dtype_ = dtype;
  t.qparams_ = std::make_shared<const QuantParams>(qparams);
  return t;
}

Tensor Tensor::FromBlob(void* data, const Shape& shape, const Strides& strides, DType dtype, const Device& device,
                        std::function<void()> release) {
  QUANTA_CHECK(!IsQuantized(dtype) && Info(dtype).bits % 8 == 0, "from_blob: ", Name(dtype),
               " is quantized; wrap its integers and quantize them instead");
  QUANTA_CHECK(shape.size() == strides.size(), "from_blob: shape ", ShapeToString(shape), " and ", strides.size(),
               " strides");
  int64_t last = 0;  // the farthest element from element 0
  for (size_t d = 0; d < shape.size(); ++d) {
    QUANTA_CHECK(shape[d] >= 0 && strides[d] >= 0, "from_blob: shape ", ShapeToString(shape),
                 " needs non-negative sizes and strides");
    if (shape[d] == 0) last = -1;
    if (last >= 0) last += (shape[d] - 1) * strides[d];
  }
  const int64_t bytes = (last + 1) * (Info(dtype).bits / 8);
  Tensor t;
  t.storage_ = Storage::Wrap(device, data, static_cast<size_t>(bytes), std::move(release));
  t.shape_ = shape;
  t.strides_ = strides;
  t.dtype_ = dtype;
  return t;
}

template <typename T>
Tensor Tensor::FromVector(const std::vector<T>& values, const Shape& shape, const Device& device) {
  constexpr DType dtype = kDTypeOf<T>;
  QUANTA_CHECK(static_cast<int64_t>(values.size()) == NumElements(shape), "from_vector: ",
               values.size(), " values do not fill shape ", ShapeToString(shape));
  Tensor host = Empty(shape, dtype, Device::Cpu());
  if constexpr (std::is_same_v<T, bool>) {
    for (size_t i = 0; i < values.size(); ++i) host.data<bool>()[i] = values[i];
  } else {
    if (!values.empty()) std::memcpy(host.raw_data(), values.data(), values.size() * sizeof(T));
  }
  return device.is_cpu() ? host : host.To(device);
}

Tensor Tensor::FromQuantized(const std::vector<int32_t>& values, const Shape& shape, DType dtype,
                             const QuantParams& qparams, const Device& device) {
  Tensor host = Empty(shape, dtype, Device::Cpu(), qparams);
  QUANTA_CHECK(static_cast<int64_t>(values.size()) == host.numel(), "from_quantized: ",
               values.size(), " values do not fill shape ", ShapeToString(shape));
  const DTypeInfo& info = Info(dtype);
  std::memset(host.raw_data(), 0, host.storage()->bytes());  // qint4's unused last nibble is 0
  for (size_t i = 0; i < values.size(); ++i) {
    QUANTA_CHECK(values[i] >= info.qmin && values[i] <= info.qmax, "from_quantized: value ",
                 values[i], " at index ", i, " outside the ", info.name, " range [", info.qmin,
                 ", ", info.qmax, "]");
    auto* bytes = static_cast<uint8_t*>(host.raw_data());
    if (dtype == DType::kQInt4) {
      StoreQInt4(bytes, static_cast<int64_t>(i), static_cast<int8_t>(values[i]));
    } else if (dtype == DType::kQInt8) {
      reinterpret_cast<int8_t*>(bytes)[i] = static_cast<int8_t>(values[i]);
    } else {
      bytes[i] = static_cast<uint8_t>(values[i]);
    }
  }
  return device.is_cpu() ? host : host.To(device);
}

// ---- metadata ------------------------------------------------------------------

int64_t Tensor::size(int64_t d) const { return shape_[WrapDim("size", *this, d, dim())]; }
int64_t Tensor::stride(int64_t d) const { return strides_[WrapDim("stride", *this, d, dim())]; }
Device Tensor::device() const { return storage_ ? storage_->device() : Device::Cpu(); }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // as in PyTorch: no element is out of place (ContiguousStrides counts a 0 as 1)
  int64_t expected = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

const QuantParams& Tensor::qparams() const {
  QUANTA_CHECK(qparams_ != nullptr, "qparams: ", Describe(), " is not quantized");
  return *qparams_;
}

std::string Tensor::Describe() const {
  if (!defined()) return "undefined";
  std::string s = absl::StrCat(Name(dtype_), ShapeToString(shape_));
  if (!device().is_cpu()) absl::StrAppend(&s, " ", device().ToString());
  return s;
}

void* Tensor::raw_data() const {
  QUANTA_CHECK(defined(), "data: undefined tensor");
  auto* base = static_cast<char*>(storage_->data());
  return base + offset_ * Info(dtype_).bits / 8;  // qint4: the byte holding element offset_
}

template <typename T>
T* Tensor::data() const {
  QUANTA_CHECK(device().is_cpu(), "data: ", Describe(), " is not on the cpu");
  QUANTA_CHECK(kDTypeOf<T> == dtype_ || (IsQuantized(dtype_) && sizeof(T) == 1),
               "data: ", Describe(), " read as ", Name(kDTypeOf<T>));
  return static_cast<T*>(raw_data());
}

// ---- views ---------------------------------------------------------------------

// Note [Per-channel views]: a view of a per-channel quantized tensor would have to
// move or slice its scales with the axis. Until an op needs that, such views are
// refused; per-tensor quantized tensors view freely.
void Tensor::CheckViewable(const char* op) const {
  QUANTA_CHECK(!qparams_ || qparams_->scheme == QScheme::kPerTensor, op, ": ", Describe(),
               " has per-channel quantization parameters; views of it are not supported "
               "(see Note [Per-channel views])");
}

Tensor Tensor::AsStrided(const Shape& shape, const Strides& strides, int64_t offset) const {
  CheckViewable("as_strided");
  return MakeView(shape, strides, offset);
}

Tensor Tensor::MakeView(const Shape& shape, const Strides& strides, int64_t offset) const {
  QUANTA_CHECK(shape.size() == strides.size(), "as_strided: shape ", ShapeToString(shape),
               " and strides ", ShapeToString(strides), " differ in rank");
  int64_t lo = offset, hi = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    QUANTA_CHECK(shape[i] >= 0, "as_strided: negative size in ", ShapeToString(shape));
    if (shape[i] == 0) { lo = 0, hi = -1; break; }
    int64_t reach = (shape[i] - 1) * strides[i];
    (reach < 0 ? lo : hi) += reach;
  }
  QUANTA_CHECK(hi < lo || (lo >= 0 && hi < StorageElements(*storage_, dtype_)),
               "as_strided: view ", ShapeToString(shape), " strides ", ShapeToString(strides),
               " offset ", offset, " reaches outside the storage of ", Describe());
  Tensor t = Detach();
  t.shape_ = shape;
  t.strides_ = strides;
  t.offset_ = offset;
  return t;
}

Tensor Tensor::View(const Shape& requested) const {
  Shape shape = requested;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      QUANTA_CHECK(infer < 0, "view: more than one -1 in ", ShapeToString(requested));
      infer = static_cast<int64_t>(i);
    } else {
      QUANTA_CHECK(shape[i] >= 0, "view: bad size in ", ShapeToString(requested));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    QUANTA_CHECK(known != 0 && numel() % known == 0, "view: shape ", ShapeToString(requested),
                 " is invalid for ", Describe());
    shape[infer] = numel() / known;
  }
  QUANTA_CHECK(NumElements(shape) == numel(), "view: shape ", ShapeToString(requested),
               " is invalid for ", Describe());
  // Match runs of old dims that are contiguous with each other to runs of new dims
  // of the same element count (the algorithm of torch's computeStride).
  Strides strides(shape.size());
  if (numel() == 0 || dim() == 0) {
    return RecordView(Op::kView, *this, MakeView(shape, ContiguousStrides(shape), offset_));
  }
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = strides_.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    tensor_numel *= shape_[d];
    if (d == 0 || (shape_[d - 1] != 1 && strides_[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      QUANTA_CHECK(view_numel == tensor_numel, "view: shape ", ShapeToString(requested),
                   " is incompatible with the strides ", ShapeToString(strides_), " of ",
                   Describe(), "; use Reshape (which copies)");
      if (d > 0) {
        chunk_base_stride = strides_[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  for (; view_d >= 0; --view_d) strides[view_d] = 1;  // leading dims of size 1
  return RecordView(Op::kView, *this, MakeView(shape, strides, offset_));
}

Tensor Tensor::Reshape(const Shape& shape) const {
  try {
    return View(shape);
  } catch (const Error&) {
    return Contiguous().View(shape);
  }
}

Tensor Tensor::Permute(const std::vector<int64_t>& dims) const {
  CheckViewable("permute");
  QUANTA_CHECK(static_cast<int>(dims.size()) == dim(), "permute: ", dims.size(),
               " dims given for ", Describe());
  Shape shape(dims.size());
  Strides strides(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = WrapDim("permute", *this, dims[i], dim());
    QUANTA_CHECK(!seen[d], "permute: dim ", dims[i], " repeated for ", Describe());
    seen[d] = true;
    shape[i] = shape_[d];
    strides[i] = strides_[d];
  }
  Tensor t = Detach();
  t.shape_ = shape;
  t.strides_ = strides;
  OpAttrs attrs;
  attrs.dims = dims;
  for (int64_t& d : attrs.dims) d = WrapDimOrNeg(d, dim());
  return RecordView(Op::kPermute, *this, t, attrs);
}

Tensor Tensor::Transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> dims(dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[WrapDim("transpose", *this, d0, dim())], dims[WrapDim("transpose", *this, d1, dim())]);
  return Permute(dims);
}

Tensor Tensor::Narrow(int64_t d, int64_t start, int64_t length) const {
  CheckViewable("narrow");
  d = WrapDim("narrow", *this, d, dim());
  if (start < 0) start += shape_[d];
  QUANTA_CHECK(start >= 0 && length >= 0 && start + length <= shape_[d], "narrow: [", start,
               ", ", start + length, ") outside dim ", d, " of ", Describe());
  Tensor t = Detach();
  t.shape_[d] = length;
  t.offset_ += start * strides_[d];
  OpAttrs attrs;
  attrs.dims = {d, start, start + length, 1};
  return RecordView(Op::kSlice, *this, t, attrs);
}

Tensor Tensor::Slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  CheckViewable("slice");
  d = WrapDim("slice", *this, d, dim());
  QUANTA_CHECK(step > 0, "slice: step must be positive, got ", step, " for ", Describe());
  int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Tensor t = Detach();
  t.offset_ += start * strides_[d];
  t.shape_[d] = (end - start + step - 1) / step;
  t.strides_[d] *= step;
  OpAttrs attrs;
  attrs.dims = {d, start, end, step};
  return RecordView(Op::kSlice, *this, t, attrs);
}

Tensor Tensor::Select(int64_t d, int64_t index) const {
  CheckViewable("select");
  d = WrapDim("select", *this, d, dim());
  if (index < 0) index += shape_[d];
  QUANTA_CHECK(index >= 0 && index < shape_[d], "select: index ", index, " outside dim ", d,
               " of ", Describe());
  Tensor t = Detach();
  t.offset_ += index * strides_[d];
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  OpAttrs attrs;
  attrs.dims = {d, index};
  return RecordView(Op::kSelect, *this, t, attrs);
}

Tensor Tensor::Expand(const Shape& shape) const {
  if (shape == shape_) return *this;
  CheckViewable("expand");
  QUANTA_CHECK(shape.size() >= shape_.size(), "expand: cannot expand ", Describe(), " to ",
               ShapeToString(shape));
  size_t lead = shape.size() - shape_.size();
  Shape out_shape(shape.size());
  Strides out_strides(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      QUANTA_CHECK(shape[i] >= 0, "expand: new leading dim needs a size, got ",
                   ShapeToString(shape), " for ", Describe());
      out_shape[i] = shape[i];
      out_strides[i] = 0;
      continue;
    }
    int64_t old = shape_[i - lead];
    int64_t want = shape[i] == -1 ? old : shape[i];
    QUANTA_CHECK(want == old || old == 1, "expand: cannot expand ", Describe(), " to ",
                 ShapeToString(shape), " (dim ", i, ")");
    out_shape[i] = want;
    out_strides[i] = want == old ? strides_[i - lead] : 0;
  }
  Tensor t = Detach();
  t.shape_ = out_shape;
  t.strides_ = out_strides;
  return RecordView(Op::kExpand, *this, t);
}

Tensor Tensor::Squeeze() const {
  CheckViewable("squeeze");
  Tensor t = Detach();
  t.shape_.clear();
  t.strides_.clear();
  for (int i = 0; i < dim(); ++i) {
    if (shape_[i] != 1) {
      t.shape_.push_back(shape_[i]);
      t.strides_.push_back(strides_[i]);
    }
  }
  return RecordView(Op::kView, *this, t);
}

Tensor Tensor::Squeeze(int64_t d) const {
  CheckViewable("squeeze");
  d = WrapDim("squeeze", *this, d, dim());
  if (shape_[d] != 1) return *this;
  Tensor t = Detach();
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return RecordView(Op::kView, *this, t);
}

Tensor Tensor::Unsqueeze(int64_t d) const {
  CheckViewable("unsqueeze");
  d = WrapDim("unsqueeze", *this, d, dim() + 1);
  Tensor t = Detach();
  int64_t stride = d < dim() ? shape_[d] * strides_[d] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, stride);
  return RecordView(Op::kView, *this, t);
}

Tensor Tensor::Flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return Reshape({1});
  start_dim = WrapDim("flatten", *this, start_dim, dim());
  end_dim = WrapDim("flatten", *this, end_dim, dim());
  QUANTA_CHECK(start_dim <= end_dim, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
  Shape shape(shape_.begin(), shape_.begin() + start_dim);
  int64_t n = 1;
  for (int64_t i = start_dim; i <= end_dim; ++i) n *= shape_[i];
  shape.push_back(n);
  shape.insert(shape.end(), shape_.begin() + end_dim + 1, shape_.end());
  return Reshape(shape);
}

// ---- copies --------------------------------------------------------------------

Tensor Tensor::Contiguous() const { return is_contiguous() ? *this : Clone(); }

bool Tensor::is_channels_last() const {
  if (dim() != 4) return false;
  // Memory order N, H, W, C; dims of size 1 may carry any stride.
  int64_t expected = 1;
  for (int d : {1, 3, 2, 0}) {
    if (shape_[d] == 1) continue;
    if (strides_[d] != expected) return false;
    expected *= shape_[d];
  }
  return true;
}

bool Tensor::suggests_channels_last() const {
  if (!is_channels_last()) return false;
  if (!is_contiguous()) return true;
  return shape_[1] == 1 && strides_[1] == 1 && shape_[2] * shape_[3] > 1;
}

Tensor Tensor::ChannelsLast() const {
  QUANTA_CHECK(dim() == 4, "channels_last: needs (N, C, H, W), got ", Describe());
  if (suggests_channels_last() || (is_channels_last() && (shape_[1] != 1 || shape_[2] * shape_[3] == 1))) return *this;
  // One channel: the same memory either way; the channel stride of 1 marks it.
  if (shape_[1] == 1 && is_contiguous()) return View({shape_[0], shape_[2], shape_[3], 1}).Permute({0, 3, 1, 2});
  return Permute({0, 2, 3, 1}).Contiguous().Permute({0, 3, 1, 2});
}

Tensor Tensor::Clone() const {
  Tensor out = qparams_ ? Empty(shape_, dtype_, device(), *qparams_) : Empty(shape_, dtype_, device());
  CopyInto(out);
  return out;
}

Tensor Tensor::To(DType dtype) const {
  if (dtype == dtype_) return *this;
  QUANTA_CHECK(!IsQuantized(dtype) && !IsQuantized(dtype_), "to: cannot cast ", Describe(),
               " to ", Name(dtype), "; quantize/dequantize convert between float and quantized");
  Tensor out = Empty(shape_, dtype, device());
  CopyInto(out);
  return out;
}

Tensor Tensor::To(const Device& device) const {
  if (device == this->device()) return *this;
  Tensor out = qparams_ ? Empty(shape_, dtype_, device, *qparams_) : Empty(shape_, dtype_, device);
  CopyInto(out);
  return out;
}

void Tensor::CopyFrom(const Tensor& src) {
  QUANTA_CHECK(defined() && src.defined(), "copy: undefined tensor");
  QUANTA_CHECK(!(GradModeEnabled() && requires_grad()), "copy_: ", Describe(),
               " requires grad; in-place writes to it would corrupt the graph (use NoGradGuard)");
  src.CopyInto(*this);
}

void Tensor::CopyInto(Tensor& out) const {
  QUANTA_CHECK(IsQuantized(dtype_) == IsQuantized(out.dtype_) &&
                   (!IsQuantized(dtype_) || (dtype_ == out.dtype_ && *qparams_ == *out.qparams_)),
               "copy: cannot copy ", Describe(), " into ", out.Describe(),
               " (quantized copies need the same dtype and parameters)");
  Shape shape;
  QUANTA_CHECK(TryBroadcastShapes(out.shape_, shape_, &shape) && shape == out.shape_, "copy: ",
               Describe(), " does not broadcast to ", out.Describe());
  Tensor from = Expand(out.shape_);
  if (device() == out.device()) {
    Dispatch(Op::kCopy, {&from, 1}, {&out, 1});  // records the copy
    return;
  }
  // Across devices: pack on the source device, move bytes, unpack on the target.
  {
    NoGradGuard no_grad;
    Tensor packed = from.Contiguous();
    if (Info(packed.dtype_).bits < 8 && packed.offset_ * Info(packed.dtype_).bits % 8 != 0) packed = packed.Clone();
    Tensor moved = qparams_ ? Empty(out.shape_, dtype_, out.device(), *qparams_)
                            : Empty(out.shape_, dtype_, out.device());
    size_t bytes = StorageBytes(dtype_, packed.numel());
    Device src_device = packed.device(), dst_device = out.device();
    if (bytes > 0) {
      if (dst_device.is_cpu()) {
        GetBackend(src_device).CopyToHost(moved.raw_data(), packed.raw_data(), bytes, src_device.index);
      } else if (src_device.is_cpu()) {
        GetBackend(dst_device).CopyFromHost(moved.raw_data(), packed.raw_data(), bytes, dst_device.index);
      } else {  // device to device through the host
        std::vector<char> host(bytes);
        GetBackend(src_device).CopyToHost(host.data(), packed.raw_data(), bytes, src_device.index);
        GetBackend(dst_device).CopyFromHost(moved.raw_data(), host.data(), bytes, dst_device.index);
      }
    }
    Dispatch(Op::kCopy, {&moved, 1}, {&out, 1});
  }
  Record(Op::kCopy, {&from, 1}, {&out, 1});
}

// ---- autograd state -----------------------------------------------------------------

bool Tensor::requires_grad() const { return autograd_ != nullptr && autograd_->requires_grad; }

Tensor& Tensor::SetRequiresGrad(bool requires_grad) {
  QUANTA_CHECK(!requires_grad || IsFloating(dtype_), "requires_grad: ", Describe(),
               " is not floating; only floating tensors have gradients");
  QUANTA_CHECK(is_leaf(), "requires_grad: ", Describe(),
               " was produced by a recorded op; only leaves can change requires_grad (Detach first)");
  if (!autograd_) autograd_ = std::make_shared<AutogradMeta>();
  autograd_->requires_grad = requires_grad;
  return *this;
}

Tensor Tensor::grad() const { return autograd_ ? autograd_->grad : Tensor(); }

void Tensor::SetGrad(const Tensor& grad) {
  QUANTA_CHECK(!grad.defined() || grad.shape() == shape_, "set_grad: gradient ", grad.Describe(),
               " does not match ", Describe());
  if (!autograd_) autograd_ = std::make_shared<AutogradMeta>();
  autograd_->grad = grad;
}

bool Tensor::is_leaf() const { return autograd_ == nullptr || autograd_->grad_fn == nullptr; }

Tensor Tensor::Detach() const {
  Tensor t = *this;
  t.autograd_.reset();
  return t;
}

// ---- reading values --------------------------------------------------------------

template <typename T>
std::vector<T> Tensor::ToVector() const {
  QUANTA_CHECK(!IsQuantized(dtype_), "to_vector: ", Describe(),
               " is quantized; read IntRepr() or dequantize it");
  Tensor host = To(Device::Cpu()).To(kDTypeOf<T>).Contiguous();
  std::vector<T> out(host.numel());
  const T* p = host.data<T>();
  std::copy(p, p + out.size(), out.begin());
  return out;
}

template <typename T>
T Tensor::item() const {
  QUANTA_CHECK(numel() == 1, "item: ", Describe(), " has ", numel(), " elements, not one");
  return ToVector<T>()[0];
}

std::vector<int32_t> Tensor::IntRepr() const {
  QUANTA_CHECK(IsQuantized(dtype_), "int_repr: ", Describe(), " is not quantized");
  Tensor host = To(Device::Cpu());
  Tensor out = Empty(shape_, DType::kI32, Device::Cpu());
  Dispatch(Op::kCopy, {&host, 1}, {&out, 1});  // quantized -> integers, unscaled
  return out.ToVector<int32_t>();
}

#define QUANTA_INSTANTIATE(T)                                                                \
  template Tensor Tensor::FromVector<T>(const std::vector<T>&, const Shape&, const Device&); \
  template T* Tensor::data<T>() const;                                                       \
  template std::vector<T> Tensor::ToVector<T>() const;                                       \
  template T Tensor::item<T>() const;
QUANTA_INSTANTIATE(float)
QUANTA_INSTANTIATE(double)
QUANTA_INSTANTIATE(Half)
QUANTA_INSTANTIATE(BFloat16)
QUANTA_INSTANTIATE(int32_t)
QUANTA_INSTANTIATE(int64_t)
QUANTA_INSTANTIATE(int8_t)
QUANTA_INSTANTIATE(uint8_t)
QUANTA_INSTANTIATE(bool)
#undef QUANTA_INSTANTIATE

}  // namespace quanta

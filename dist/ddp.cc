// DistributedDataParallel's reducer, the gradient codec, synchronized batch norm
// and federated averaging.
#include "dist/ddp.h"

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "autograd/autograd.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "nn/layers.h"

namespace quanta::dist {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

DType CodeType(int bits) { return bits == 8 ? DType::kQInt8 : DType::kQInt4; }
int64_t CodeMax(int bits) { return (int64_t{1} << (bits - 1)) - 1; }

}  // namespace

// ---- the codec -----------------------------------------------------------------

int64_t GradientCodec::PayloadBytes(int64_t n) const { return 4 + StorageBytes(CodeType(bits_), n); }

Tensor GradientCodec::Encode(const Tensor& v) {
  QUANTA_CHECK(bits_ == 8 || bits_ == 4, "gradient codec: ", bits_, " bits (8 or 4)");
  QUANTA_CHECK(v.dim() == 1 && v.dtype() == DType::kF32 && v.device().is_cpu(), "gradient codec: encodes f32 (n) on the CPU, got ",
               v.Describe());
  NoGradGuard no_grad;
  const int64_t n = v.numel();
  Tensor x = error_feedback_ && residual_.defined() ? Add(v, residual_) : v.Contiguous();
  const double amax = Max(Abs(x)).item<float>();
  // The scale goes on the wire as f32: round it first, so sender and receivers
  // decode with the same value.
  const float scale = amax > 0 ? static_cast<float>(amax / static_cast<double>(CodeMax(bits_))) : 1.0f;
  QuantParams params = QuantParams::PerTensor(scale, 0).WithRange(-CodeMax(bits_), CodeMax(bits_));
  Tensor q = Quantize(x, CodeType(bits_), params);
  if (error_feedback_) residual_ = Sub(x, Dequantize(q));
  Tensor payload = Tensor::Empty({PayloadBytes(n)}, DType::kU8);
  auto* p = static_cast<uint8_t*>(payload.raw_data());
  std::memcpy(p, &scale, 4);
  std::memcpy(p + 4, q.raw_data(), StorageBytes(CodeType(bits_), n));
  return payload;
}

Tensor GradientCodec::DecodeSum(const Tensor& gathered, int ranks, int64_t n) const {
  const int64_t bytes = PayloadBytes(n);
  QUANTA_CHECK(gathered.dtype() == DType::kU8 && gathered.numel() == ranks * bytes, "gradient codec: ", gathered.Describe(),
               " is not ", ranks, " payloads of ", bytes, " bytes");
  NoGradGuard no_grad;
  Tensor sum;
  const auto* p = static_cast<const uint8_t*>(gathered.raw_data());
  for (int r = 0; r < ranks; ++r) {
    float scale;
    std::memcpy(&scale, p + r * bytes, 4);
    QuantParams params = QuantParams::PerTensor(scale, 0).WithRange(-CodeMax(bits_), CodeMax(bits_));
    Tensor q = Tensor::Empty({n}, CodeType(bits_), Device::Cpu(), params);
    std::memcpy(q.raw_data(), p + r * bytes + 4, bytes - 4);
    Tensor v = Dequantize(q);
    sum = sum.defined() ? Add(sum, v) : v;
  }
  return sum;
}

// ---- state ---------------------------------------------------------------------

void BroadcastState(nn::Module& module, Communicator& comm, int root) {
  if (comm.size() == 1) return;
  auto send = [&](Tensor* t) {
    if (!t->defined() || t->numel() == 0) return;
    QUANTA_CHECK(t->is_contiguous(), "broadcast_state: ", t->Describe(), " is not contiguous");
    comm.Broadcast(*t, root);
  };
  for (auto& [name, t] : module.NamedParameters()) send(t);
  for (auto& [name, t] : module.NamedBuffers()) send(t);
}

int SyncBuffers(nn::Module& module, Communicator& comm, const std::function<bool(const std::string&)>& which,
                ReduceOp op) {
  int n = 0;
  for (auto& [name, t] : module.NamedBuffers()) {
    if (!t->defined() || t->numel() == 0 || !IsFloating(t->dtype()) || !which(name)) continue;
    ++n;
    if (comm.size() > 1) comm.AllReduce(*t, op);
  }
  return n;
}

// ---- synchronized batch norm ----------------------------------------------------

Tensor AllReduceSumWithGradient(const Tensor& x, const std::shared_ptr<Communicator>& comm) {
  Tensor reduced = x.Detach().Contiguous().Clone();
  comm->AllReduce(reduced, ReduceOp::kSum);
  if (!x.requires_grad() || !GradModeEnabled()) return reduced;
  // The value is the reduced one (x - x is exactly 0); the gradient reaches x
  // through the identity, and x's hook sums it over ranks.
  Tensor input = x;
  RegisterHook(input, [comm](const Tensor& g) {
    Tensor sum = g.Contiguous().Clone();
    comm->AllReduce(sum, ReduceOp::kSum);
    return sum;
  });
  return Add(Sub(input, x.Detach()), reduced);
}

// Note [Synchronized statistics]: each rank sends its per-channel (mean, M2,
// count) and the global ones are combined as Chan et al. do (pairwise-stable,
// no E[x^2] - E[x]^2 cancellation): mean = sum n_r mean_r / N, M2 = sum (M2_r +
// n_r (mean_r - mean)^2). The gather is a sum of zero-padded slots, so its
// gradient is AllReduceSumWithGradient's.
int SyncBatchNorm(nn::Module& module, std::shared_ptr<Communicator> comm) {
  if (comm->size() == 1) return 0;
  int n = 0;
  for (auto& [name, m] : module.NamedModules()) {
    auto* bn = dynamic_cast<nn::BatchNorm2d*>(m);
    if (bn == nullptr) continue;
    ++n;
    bn->sync_stats = [comm](const Tensor& local) {  // (3, C): mean, M2, count
      const int W = comm->size(), r = comm->rank();
      const int64_t C = local.size(1);
      std::vector<Tensor> parts;
      if (r > 0) parts.push_back(Zeros({r, 3, C}, local.dtype(), local.device()));
      parts.push_back(local.Unsqueeze(0));
      if (r < W - 1) parts.push_back(Zeros({W - 1 - r, 3, C}, local.dtype(), local.device()));
      Tensor all = AllReduceSumWithGradient(Concat(parts, 0), comm);  // (W, 3, C)
      Tensor means = all.Select(1, 0), m2 = all.Select(1, 1);          // (W, C)
      Tensor counts = all.Select(1, 2).Detach();                       // (W, C), equal along C
      Tensor total = Sum(counts, {0});                                 // (C)
      Tensor mean = Div(Sum(Mul(means, counts), {0}), total);
      Tensor d = Sub(means, mean.Unsqueeze(0));
      Tensor var = Div(Add(Sum(m2, {0}), Sum(Mul(Mul(d, d), counts), {0})), total);
      return Stack({mean, var, total}, 0);
    };
  }
  return n;
}

// ---- the reducer ---------------------------------------------------------------

struct DistributedDataParallel::Bucket {
  std::vector<Tensor> params;  // share storage and gradient with the module's
  std::vector<std::string> names;
  std::vector<int64_t> offsets;
  int64_t numel = 0;
  std::vector<bool> ready;
  int pending = 0;
  bool launched = false;
  Tensor flat;                 // f32 (numel) on the parameters' device
  Tensor payload, gathered;    // quantized exchange
  std::unique_ptr<Work> work;
  GradientCodec codec{8, true};
  std::vector<Tensor> earlier;  // grads accumulated before this backward, if any
};

DistributedDataParallel::DistributedDataParallel(nn::Module& module, std::shared_ptr<Communicator> comm,
                                                 DdpOptions options)
    : module_(module), comm_(std::move(comm)), options_(options), alive_(std::make_shared<bool>(true)) {
  QUANTA_CHECK(options_.grad_bits == 32 || options_.grad_bits == 8 || options_.grad_bits == 4,
               "DistributedDataParallel: grad_bits ", options_.grad_bits, " (32, 8 or 4)");
  QUANTA_CHECK(options_.bucket_bytes >= 4, "DistributedDataParallel: bucket_bytes ", options_.bucket_bytes);
  BroadcastState(module_, *comm_);
  std::vector<std::pair<std::string, Tensor*>> params;
  for (auto& [name, p] : module_.NamedParameters()) {
    if (p->requires_grad()) params.emplace_back(name, p);
  }
  Device device = params.empty() ? Device::Cpu() : params[0].second->device();
  // Buckets hold the parameters' dtype (f32, or f64 where a model trains in f64).
  dtype_ = params.empty() ? DType::kF32 : params[0].second->dtype();
  QUANTA_CHECK(dtype_ == DType::kF32 || dtype_ == DType::kF64, "DistributedDataParallel: parameters are ", Name(dtype_),
               " (f32 or f64; under autocast the master weights stay f32)");
  QUANTA_CHECK(options_.grad_bits == 32 || device.is_cpu(), "DistributedDataParallel: grad_bits ", options_.grad_bits,
               " runs on the CPU; the parameters are on ", device.ToString());
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    Tensor* p = it->second;
    QUANTA_CHECK(p->device() == device && p->dtype() == dtype_, "DistributedDataParallel: parameter ", it->first, " is ",
                 p->Describe(), "; all must be ", Name(dtype_), " on ", device.ToString());
    if (buckets_.empty() || (buckets_.back()->numel + p->numel()) * ElementSize() > options_.bucket_bytes) {
      buckets_.push_back(std::make_unique<Bucket>());
      buckets_.back()->codec = GradientCodec(options_.grad_bits == 32 ? 8 : options_.grad_bits, options_.error_feedback);
    }
    Bucket& b = *buckets_.back();
    b.params.push_back(*p);
    b.names.push_back(it->first);
    b.offsets.push_back(b.numel);
    b.numel += p->numel();
  }
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    Bucket& b = *buckets_[bi];
    b.flat = Zeros({b.numel}, dtype_, device);
    for (size_t s = 0; s < b.params.size(); ++s) {
      std::shared_ptr<bool> alive = alive_;
      RegisterHook(b.params[s], [this, alive, bi, s](const Tensor& g) {
        if (*alive && armed_) OnGradient(static_cast<int>(bi), static_cast<int>(s), g);
        return Tensor();
      });
    }
  }
  stats_.buckets = static_cast<int>(buckets_.size());
}

DistributedDataParallel::~DistributedDataParallel() { *alive_ = false; }

void DistributedDataParallel::OnGradient(int bucket, int slot, const Tensor& g) {
  Bucket& b = *buckets_[bucket];
  QUANTA_CHECK(!b.ready[slot], "DistributedDataParallel: ", b.names[slot], " got two gradients in one backward");
  const int64_t n = b.params[slot].numel();
  b.flat.Narrow(0, b.offsets[slot], n).CopyFrom(g.Contiguous().View({n}).To(dtype_));
  b.ready[slot] = true;
  if (--b.pending == 0) {
    Launch(b);
    ++stats_.launched_in_backward;
  }
  Progress();
}

void DistributedDataParallel::Launch(Bucket& b) {
  if (options_.grad_bits == 32) {
    b.work = comm_->AllReduceAsync(b.flat);
    stats_.bytes_sent += b.numel * ElementSize();
  } else {
    b.payload = b.codec.Encode(b.flat.To(DType::kF32));
    b.gathered = Tensor::Empty({comm_->size() * b.payload.numel()}, DType::kU8);
    b.work = comm_->AllGatherAsync(b.payload, b.gathered);
    stats_.bytes_sent += b.payload.numel();
  }
  stats_.f32_bytes += b.numel * ElementSize();
  b.launched = true;
}

void DistributedDataParallel::Progress() {
  for (auto& b : buckets_) {
    if (b->launched && b->work) b->work->Test();
  }
}

void DistributedDataParallel::Backward(const Tensor& loss) {
  stats_.bytes_sent = stats_.f32_bytes = stats_.launched_in_backward = 0;
  stats_.wait_seconds = 0;
  for (auto& b : buckets_) {
    b->ready.assign(b->params.size(), false);
    b->pending = static_cast<int>(b->params.size());
    b->launched = false;
    b->work.reset();
    b->earlier.clear();
    for (const Tensor& p : b->params) b->earlier.push_back(p.grad());
  }
  armed_ = true;
  try {
    quanta::Backward(loss);
  } catch (...) {
    armed_ = false;
    throw;
  }
  armed_ = false;
  NoGradGuard no_grad;
  // Parameters this rank did not reach contribute zeros; what is left starts now,
  // in bucket order (the same on every rank when the graphs are alike).
  for (auto& b : buckets_) {
    if (b->launched) continue;
    for (size_t s = 0; s < b->params.size(); ++s) {
      if (!b->ready[s]) b->flat.Narrow(0, b->offsets[s], b->params[s].numel()).CopyFrom(Zeros({b->params[s].numel()}, dtype_));
    }
    Launch(*b);
  }
  const double inv = 1.0 / comm_->size();
  for (auto& b : buckets_) {
    auto start = Clock::now();
    b->work->Wait();
    stats_.wait_seconds += Since(start);
    Tensor mean = options_.grad_bits == 32 ? Mul(b->flat, inv)
                                           : Mul(b->codec.DecodeSum(b->gathered, comm_->size(), b->numel), inv);
    for (size_t s = 0; s < b->params.size(); ++s) {
      Tensor& p = b->params[s];
      Tensor g = mean.Narrow(0, b->offsets[s], p.numel()).View(p.shape()).To(p.dtype());
      if (b->earlier[s].defined()) g = Add(b->earlier[s], g);
      p.SetGrad(g.Contiguous().Clone());
    }
  }
  ++stats_.steps;
}

// ---- federated averaging ----------------------------------------------------------

ModelAverager::ModelAverager(nn::Module& module, std::shared_ptr<Communicator> comm, int bits, bool error_feedback)
    : module_(module), comm_(std::move(comm)), codec_(bits == 32 ? 0 : bits, error_feedback) {
  QUANTA_CHECK(bits == 32 || bits == 8 || bits == 4, "ModelAverager: ", bits, " bits (32, 8 or 4)");
  BroadcastState(module_, *comm_);
  std::vector<int64_t> sizes;
  std::vector<Tensor> flat;
  NoGradGuard no_grad;
  for (Tensor* t : Tensors(&sizes)) flat.push_back(t->Contiguous().View({t->numel()}));
  sizes_ = sizes;
  if (!flat.empty()) anchor_ = Concat(flat, 0).Clone();
}

std::vector<Tensor*> ModelAverager::Tensors(std::vector<int64_t>* sizes) const {
  std::vector<Tensor*> out;
  for (auto& [name, t] : module_.NamedParameters()) out.push_back(t);
  for (auto& [name, t] : module_.NamedBuffers()) {
    if (t->defined() && t->numel() > 0 && t->dtype() == DType::kF32) out.push_back(t);
  }
  sizes->clear();
  for (Tensor* t : out) {
    QUANTA_CHECK(t->device().is_cpu() && t->dtype() == DType::kF32, "ModelAverager: ", t->Describe(), " (f32 on the CPU)");
    sizes->push_back(t->numel());
  }
  return out;
}

void ModelAverager::Average() {
  NoGradGuard no_grad;
  std::vector<int64_t> sizes;
  std::vector<Tensor*> tensors = Tensors(&sizes);
  if (tensors.empty()) return;
  std::vector<Tensor> flat;
  for (Tensor* t : tensors) flat.push_back(t->Contiguous().View({t->numel()}));
  Tensor now = Concat(flat, 0);
  if (sizes != sizes_) {  // a new layout: average the values themselves once
    Tensor mean = now.Clone();
    comm_->AllReduce(mean, ReduceOp::kMean);
    anchor_ = mean;
    sizes_ = sizes;
    codec_ = GradientCodec(codec_.bits(), codec_.error_feedback());  // the residual had the old layout
    bytes_sent_ = 4 * mean.numel();
  } else {
    Tensor delta = Sub(now, anchor_);
    const int64_t n = delta.numel();
    Tensor mean;
    if (codec_.bits() == 0) {
      comm_->AllReduce(delta, ReduceOp::kMean);
      mean = delta;
      bytes_sent_ = 4 * n;
    } else {
      Tensor payload = codec_.Encode(delta);
      Tensor gathered = comm_->AllGather(payload);
      mean = Mul(codec_.DecodeSum(gathered, comm_->size(), n), 1.0 / comm_->size());
      bytes_sent_ = payload.numel();
    }
    anchor_ = Add(anchor_, mean);
  }
  int64_t offset = 0;
  for (Tensor* t : tensors) {
    t->CopyFrom(anchor_.Narrow(0, offset, t->numel()).View(t->shape()));
    offset += t->numel();
  }
}

}  // namespace quanta::dist

// Data parallelism over a Communicator: DistributedDataParallel (gradients
// bucketed and exchanged from autograd hooks while backward runs, optionally
// quantized to 8 or 4 bits with error feedback), synchronized batch norm,
// federated averaging of models (ModelAverager), and the state sync helpers.
// Models and optimizers do not know how many ranks there are. Not here: the
// engines (dist/communicator.h), which examples each rank reads (data/loader.h's
// shards, data/partition.h).
//
//   auto comm = *dist::Init();
//   dist::DistributedDataParallel ddp(*net, comm, {.grad_bits = 8});   // broadcasts rank 0's model
//   for (...) {
//     opt.ZeroGrad();
//     Tensor loss = CrossEntropy(net->Forward(x), y);   // this rank's shard of the batch
//     ddp.Backward(loss);                               // grads: the mean over ranks
//     opt.Step();
//   }
//   ddp.stats().bytes_sent;                             // per step, this rank
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "nn/module.h"

namespace quanta::dist {

// Note [Quantized exchange]: a bucket of n f32 values v (plus the residual the
// last step left, with error feedback) goes on the wire as one f32 scale
// s = max|v| / (2^(b-1) - 1) and n b-bit codes q = round(v / s) (core's Quantize,
// symmetric, qint8 or packed qint4), 4 + n b / 8 bytes; every rank gathers all
// ranks' payloads and sums s_r q_r in rank order, so all ranks hold the same
// result. The residual v - s q is carried to the next step (error feedback,
// Seide et al. 2014; Karimireddy et al. 2019): without it, what rounds away is lost.
class GradientCodec {
 public:
  GradientCodec(int bits, bool error_feedback) : bits_(bits), error_feedback_(error_feedback) {}
  int bits() const { return bits_; }
  bool error_feedback() const { return error_feedback_; }
  // v: f32 (n) on the CPU -> u8 payload of PayloadBytes(n); updates the residual.
  Tensor Encode(const Tensor& v);
  // The sum over ranks of the decoded payloads gathered as (ranks * bytes) u8.
  Tensor DecodeSum(const Tensor& gathered, int ranks, int64_t n) const;
  int64_t PayloadBytes(int64_t n) const;
  const Tensor& residual() const { return residual_; }

 private:
  int bits_;
  bool error_feedback_;
  Tensor residual_;
};

struct DdpOptions {
  // Gradient bytes per bucket (4 a value; 8 for f64 models). Small models want small buckets (the first
  // exchange starts sooner); PyTorch's default is 25 MB.
  int64_t bucket_bytes = int64_t{1} << 20;
  int grad_bits = 32;          // 32: f32 all-reduce; 8 or 4: Note [Quantized exchange]
  bool error_feedback = true;  // with grad_bits 8 or 4
};

struct DdpStats {
  int64_t steps = 0;
  int64_t bytes_sent = 0;        // by this rank in the last step (payloads, not protocol)
  int64_t f32_bytes = 0;         // what an unquantized exchange of the same gradients sends (8 bytes a value for f64)
  int buckets = 0;
  double wait_seconds = 0;       // last step: time blocked after backward, waiting for exchanges
  int64_t launched_in_backward = 0;  // last step: buckets started before backward ended
};

class DistributedDataParallel {
 public:
  // Broadcasts rank 0's parameters and buffers, then hooks every parameter that
  // requires grad; buckets hold parameters in reverse registration order (the
  // order backward finishes them).
  DistributedDataParallel(nn::Module& module, std::shared_ptr<Communicator> comm, DdpOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // Backward(loss), exchanging each bucket as soon as its gradients are final;
  // returns with every parameter's grad() the mean over ranks (a parameter no
  // rank used gets zeros).
  void Backward(const Tensor& loss);
  const DdpStats& stats() const { return stats_; }
  Communicator& comm() { return *comm_; }

 private:
  struct Bucket;
  void OnGradient(int bucket, int slot, const Tensor& g);
  void Launch(Bucket& b);
  void Progress();

  nn::Module& module_;
  std::shared_ptr<Communicator> comm_;
  DdpOptions options_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  bool armed_ = false;
  DdpStats stats_;
  std::shared_ptr<bool> alive_;  // hooks outlive this object inside the parameters
  DType dtype_ = DType::kF32;    // the parameters' (and buckets')
  int64_t ElementSize() const { return dtype_ == DType::kF64 ? 8 : 4; }
};

// Rank root's parameters and buffers to every rank.
void BroadcastState(nn::Module& module, Communicator& comm, int root = 0);
// Reduces the floating buffers whose dotted names `which` accepts (e.g. QAT
// observers' ranges, so every rank quantizes alike); returns how many.
int SyncBuffers(nn::Module& module, Communicator& comm, const std::function<bool(const std::string&)>& which,
                ReduceOp op = ReduceOp::kMean);

// Sets every BatchNorm2d of module to normalize with the statistics of the
// global batch (all ranks'), differentiably (nn::BatchNorm2d::sync_stats). With
// one rank it changes nothing. Returns how many layers.
int SyncBatchNorm(nn::Module& module, std::shared_ptr<Communicator> comm);

// y = the sum of x over ranks, whose gradient is the sum over ranks of y's
// (every rank's loss depends on y). The building block of synchronized batch norm.
Tensor AllReduceSumWithGradient(const Tensor& x, const std::shared_ptr<Communicator>& comm);

// Federated averaging / local SGD: each rank trains on its own for K steps, then
// Average() replaces every rank's parameters (and f32 buffers) with the mean.
// What is exchanged is each rank's change since the last average, quantized
// when bits < 32 (Note [Quantized exchange], with error feedback). When the
// state's layout changed since the last average (a buffer sized lazily, as QAT
// observers are at the first forward), the values themselves are averaged in
// f32 once and become the new reference.
class ModelAverager {
 public:
  ModelAverager(nn::Module& module, std::shared_ptr<Communicator> comm, int bits = 32, bool error_feedback = true);
  void Average();
  int64_t bytes_sent() const { return bytes_sent_; }  // by this rank in the last Average()
  int64_t f32_bytes() const { return anchor_.defined() ? 4 * anchor_.numel() : 0; }  // the same values as f32

 private:
  // Parameters, then f32 buffers that hold values (QAT observers size theirs
  // at the first forward), with their sizes.
  std::vector<Tensor*> Tensors(std::vector<int64_t>* sizes) const;
  nn::Module& module_;
  std::shared_ptr<Communicator> comm_;
  std::vector<int64_t> sizes_;    // the layout anchor_ was taken with
  Tensor anchor_;                 // the values after the last average, flat f32
  GradientCodec codec_;
  int64_t bytes_sent_ = 0;
};

}  // namespace quanta::dist

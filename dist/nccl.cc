// The NCCL engine (--config=cuda; NCCL from the CUDA toolkit): CUDA tensors, one
// GPU per rank (rank % visible devices), the unique id broadcast over MPI.
// Collectives run on a stream of their own after the device's compute stream has
// drained, and are waited for before returning (the async forms record an event):
// correct first, overlap with compute left to a later change.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "dist/communicator.h"

namespace quanta::dist {
namespace {

#define QUANTA_NCCL_CHECK(call)                                                                      \
  do {                                                                                               \
    ncclResult_t r_ = (call);                                                                        \
    QUANTA_CHECK(r_ == ncclSuccess, #call, " failed (", __FILE__, ":", __LINE__, "): ", ncclGetErrorString(r_)); \
  } while (0)
#define QUANTA_CUDART_CHECK(call)                                                                     \
  do {                                                                                                \
    cudaError_t e_ = (call);                                                                          \
    QUANTA_CHECK(e_ == cudaSuccess, #call, " failed (", __FILE__, ":", __LINE__, "): ", cudaGetErrorString(e_)); \
  } while (0)

ncclDataType_t NcclType(DType d) {
  switch (d) {
    case DType::kF32: return ncclFloat32;
    case DType::kF64: return ncclFloat64;
    case DType::kI64: return ncclInt64;
    case DType::kI32: return ncclInt32;
    case DType::kI8: return ncclInt8;
    default: return ncclUint8;
  }
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kMin: return ncclMin;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMean: return ncclAvg;
    default: return ncclSum;
  }
}

class NcclWork : public Work {
 public:
  explicit NcclWork(cudaStream_t s) {
    QUANTA_CUDART_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    QUANTA_CUDART_CHECK(cudaEventRecord(event_, s));
  }
  ~NcclWork() override {
    cudaEventSynchronize(event_);
    cudaEventDestroy(event_);
  }
  void Wait() override { QUANTA_CUDART_CHECK(cudaEventSynchronize(event_)); }
  bool Test() override { return cudaEventQuery(event_) == cudaSuccess; }

 private:
  cudaEvent_t event_ = nullptr;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<Communicator> mpi, int device) : mpi_(std::move(mpi)), device_(device) {
    ncclUniqueId id;
    if (mpi_->rank() == 0) QUANTA_NCCL_CHECK(ncclGetUniqueId(&id));
    Tensor bytes = Tensor::Empty({static_cast<int64_t>(sizeof(id))}, DType::kU8);
    std::memcpy(bytes.raw_data(), &id, sizeof(id));
    mpi_->Broadcast(bytes, 0);
    std::memcpy(&id, bytes.raw_data(), sizeof(id));
    QUANTA_CUDART_CHECK(cudaSetDevice(device_));
    QUANTA_CUDART_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    QUANTA_NCCL_CHECK(ncclCommInitRank(&comm_, mpi_->size(), id, mpi_->rank()));
  }
  ~NcclCommunicator() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  std::string name() const override { return "nccl"; }

  void AllReduce(Tensor& t, ReduceOp op) override {
    Prepare("all_reduce", t);
    QUANTA_NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), t.numel(), NcclType(t.dtype()), NcclOp(op), comm_, stream_));
    QUANTA_CUDART_CHECK(cudaStreamSynchronize(stream_));
  }
  void Broadcast(Tensor& t, int root) override {
    Prepare("broadcast", t);
    QUANTA_CHECK(root >= 0 && root < size(), "broadcast: root ", root, " outside [0, ", size(), ")");
    QUANTA_NCCL_CHECK(ncclBroadcast(t.raw_data(), t.raw_data(), t.numel(), NcclType(t.dtype()), root, comm_, stream_));
    QUANTA_CUDART_CHECK(cudaStreamSynchronize(stream_));
  }
  Tensor AllGather(const Tensor& t) override {
    Prepare("all_gather", t);
    Shape s = t.shape();
    QUANTA_CHECK(!s.empty(), "all_gather: ", t.Describe(), " needs a dim 0 to gather along");
    s[0] *= size();
    Tensor out = Tensor::Empty(s, t.dtype(), t.device());
    QUANTA_NCCL_CHECK(ncclAllGather(t.raw_data(), out.raw_data(), t.numel(), NcclType(t.dtype()), comm_, stream_));
    QUANTA_CUDART_CHECK(cudaStreamSynchronize(stream_));
    return out;
  }
  void Barrier() override { mpi_->Barrier(); }
  std::unique_ptr<Work> AllReduceAsync(Tensor& t) override {
    Prepare("all_reduce", t);
    QUANTA_NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), t.numel(), NcclType(t.dtype()), ncclSum, comm_, stream_));
    return std::make_unique<NcclWork>(stream_);
  }
  std::unique_ptr<Work> AllGatherAsync(const Tensor& t, Tensor& out) override {
    Prepare("all_gather", t);
    QUANTA_CHECK(out.device() == t.device() && out.numel() == t.numel() * size() && out.dtype() == t.dtype(),
                 "all_gather: output ", out.Describe(), " for ", size(), " x ", t.Describe());
    QUANTA_NCCL_CHECK(ncclAllGather(t.raw_data(), out.raw_data(), t.numel(), NcclType(t.dtype()), comm_, stream_));
    return std::make_unique<NcclWork>(stream_);
  }
  [[noreturn]] void Abort(const std::string& message) override {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    mpi_->Abort(message);
  }

 private:
  // The tensor's producers run on the backend's compute stream: drain it first.
  void Prepare(const char* what, const Tensor& t) {
    internal::CheckTensor(what, t);
    QUANTA_CHECK(t.device().type == DeviceType::kCuda && t.device().index == device_, what, ": ", t.Describe(),
                 " is not on this rank's GPU cuda:", device_, " (the NCCL engine)");
    GetBackend(t.device()).Synchronize(device_);
  }
  std::shared_ptr<Communicator> mpi_;
  int device_;
  cudaStream_t stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

namespace internal {
bool NcclCompiled() { return true; }

absl::StatusOr<std::shared_ptr<Communicator>> InitNccl(const std::shared_ptr<Communicator>& mpi) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError(absl::StrCat("dist::Init(kNccl): rank ", mpi->rank(), " sees no GPU"));
  }
  if (devices < mpi->size()) {  // NCCL refuses two ranks on one GPU
    return absl::FailedPreconditionError(absl::StrCat("dist::Init(kNccl): one GPU per rank: ", mpi->size(), " ranks, ",
                                                      devices, " GPU", devices == 1 ? "" : "s"));
  }
  try {
    return std::shared_ptr<Communicator>(std::make_shared<NcclCommunicator>(mpi, mpi->rank() % devices));
  } catch (const Error& e) {
    return absl::InternalError(e.what());
  }
}
}  // namespace internal

}  // namespace quanta::dist

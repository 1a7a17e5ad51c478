// The MPI engine (OpenMPI from Debian's libopenmpi-dev): CPU tensors, blocking
// and nonblocking collectives on MPI_COMM_WORLD. Errors come back as return codes
// (MPI_ERRORS_RETURN) and are thrown as quanta::Error naming the rank.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "dist/communicator.h"

namespace quanta::dist {
namespace {

MPI_Datatype MpiType(DType d) {
  switch (d) {
    case DType::kF32: return MPI_FLOAT;
    case DType::kF64: return MPI_DOUBLE;
    case DType::kI64: return MPI_INT64_T;
    case DType::kI32: return MPI_INT32_T;
    case DType::kI8: return MPI_INT8_T;
    default: return MPI_UINT8_T;
  }
}

MPI_Op MpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kMin: return MPI_MIN;
    case ReduceOp::kMax: return MPI_MAX;
    default: return MPI_SUM;
  }
}

int WorldRank() {
  int r = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// Note [MPI errors]: MPI_COMM_WORLD returns codes instead of aborting, so a
// failed call becomes an exception with the call, the rank and MPI's own words;
// the app then calls Abort, which ends the whole job (one failed rank never
// leaves the others waiting in a collective).
void Check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  QUANTA_CHECK(false, call, " failed on rank ", WorldRank(), ": ", std::string(text, len));
}

class MpiWork : public Work {
 public:
  explicit MpiWork(const char* what) : what_(what) {}
  MPI_Request* request() { return &request_; }
  void Wait() override {
    if (done_) return;
    Check(MPI_Wait(&request_, MPI_STATUS_IGNORE), what_);
    done_ = true;
  }
  bool Test() override {
    if (done_) return true;
    int flag = 0;
    Check(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE), what_);
    done_ = flag != 0;
    return done_;
  }
  ~MpiWork() override {
    if (!done_) MPI_Wait(&request_, MPI_STATUS_IGNORE);  // never leave MPI writing into freed memory
  }

 private:
  const char* what_;
  MPI_Request request_ = MPI_REQUEST_NULL;
  bool done_ = false;
};

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  void AllReduce(Tensor& t, ReduceOp op) override {
    CheckCpu("all_reduce", t);
    Check(MPI_Allreduce(MPI_IN_PLACE, t.raw_data(), static_cast<int>(t.numel()), MpiType(t.dtype()), MpiOp(op),
                        MPI_COMM_WORLD),
          "MPI_Allreduce");
    if (op == ReduceOp::kMean) {
      QUANTA_CHECK(IsFloating(t.dtype()), "all_reduce: mean of ", t.Describe(), " (floating tensors only)");
      NoGradGuard no_grad;
      t.CopyFrom(Div(t, static_cast<double>(size_)));
    }
  }
  void Broadcast(Tensor& t, int root) override {
    CheckCpu("broadcast", t);
    QUANTA_CHECK(root >= 0 && root < size_, "broadcast: root ", root, " outside [0, ", size_, ")");
    Check(MPI_Bcast(t.raw_data(), static_cast<int>(t.numel()), MpiType(t.dtype()), root, MPI_COMM_WORLD), "MPI_Bcast");
  }
  Tensor AllGather(const Tensor& t) override {
    Tensor out = GatherOutput("all_gather", t);
    Check(MPI_Allgather(t.raw_data(), static_cast<int>(t.numel()), MpiType(t.dtype()), out.raw_data(),
                        static_cast<int>(t.numel()), MpiType(t.dtype()), MPI_COMM_WORLD),
          "MPI_Allgather");
    return out;
  }
  void Barrier() override { Check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

  std::unique_ptr<Work> AllReduceAsync(Tensor& t) override {
    CheckCpu("all_reduce", t);
    auto w = std::make_unique<MpiWork>("MPI_Iallreduce");
    Check(MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), static_cast<int>(t.numel()), MpiType(t.dtype()), MPI_SUM,
                         MPI_COMM_WORLD, w->request()),
          "MPI_Iallreduce");
    return w;
  }
  std::unique_ptr<Work> AllGatherAsync(const Tensor& t, Tensor& out) override {
    Tensor shape = GatherOutput("all_gather", t);
    QUANTA_CHECK(out.shape() == shape.shape() && out.dtype() == t.dtype() && out.is_contiguous() && out.device().is_cpu(),
                 "all_gather: output ", out.Describe(), " for ", size_, " x ", t.Describe());
    auto w = std::make_unique<MpiWork>("MPI_Iallgather");
    Check(MPI_Iallgather(t.raw_data(), static_cast<int>(t.numel()), MpiType(t.dtype()), out.raw_data(),
                         static_cast<int>(t.numel()), MpiType(t.dtype()), MPI_COMM_WORLD, w->request()),
          "MPI_Iallgather");
    return w;
  }

  [[noreturn]] void Abort(const std::string& message) override {
    std::fprintf(stderr, "rank %d of %d: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::exit(1);
  }

 private:
  void CheckCpu(const char* what, const Tensor& t) const {
    internal::CheckTensor(what, t);
    QUANTA_CHECK(t.device().is_cpu(), what, ": ", t.Describe(), " is not on the CPU (the MPI engine; NCCL carries CUDA tensors)");
    QUANTA_CHECK(t.numel() < (int64_t{1} << 31), what, ": ", t.Describe(), " has more elements than one MPI call takes");
  }
  Tensor GatherOutput(const char* what, const Tensor& t) const {
    CheckCpu(what, t);
    QUANTA_CHECK(t.dim() >= 1, what, ": ", t.Describe(), " needs a dim 0 to gather along");
    Shape s = t.shape();
    s[0] *= size_;
    return Tensor::Empty(s, t.dtype());
  }
  int rank_ = 0, size_ = 1;
};

}  // namespace

namespace internal {
absl::StatusOr<std::shared_ptr<Communicator>> InitMpi() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    // Funneled: only the thread that called Init talks to MPI (the data loader's
    // workers never do).
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      return absl::UnavailableError("MPI_Init_thread failed (is this process started by mpirun or srun?)");
    }
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  return std::shared_ptr<Communicator>(std::make_shared<MpiCommunicator>());
}
}  // namespace internal

}  // namespace quanta::dist

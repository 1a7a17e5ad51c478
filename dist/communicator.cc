// The engine-independent part: the single-process communicator, Init's choice.
#include "dist/communicator.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "core/error.h"
#include "core/ops.h"

namespace quanta::dist {
namespace {

class DoneWork : public Work {
 public:
  void Wait() override {}
  bool Test() override { return true; }
};

class SingleCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single"; }
  void AllReduce(Tensor& t, ReduceOp) override { internal::CheckTensor("all_reduce", t); }
  void Broadcast(Tensor& t, int root) override {
    internal::CheckTensor("broadcast", t);
    QUANTA_CHECK(root == 0, "broadcast: root ", root, " outside [0, 1)");
  }
  Tensor AllGather(const Tensor& t) override {
    internal::CheckTensor("all_gather", t);
    return t.Clone();
  }
  void Barrier() override {}
  [[noreturn]] void Abort(const std::string& message) override {
    std::fprintf(stderr, "rank 0 of 1: %s\n", message.c_str());
    std::exit(1);
  }
};

}  // namespace

std::unique_ptr<Work> Communicator::AllReduceAsync(Tensor& t) {
  AllReduce(t, ReduceOp::kSum);
  return std::make_unique<DoneWork>();
}

std::unique_ptr<Work> Communicator::AllGatherAsync(const Tensor& t, Tensor& out) {
  Tensor all = AllGather(t);
  QUANTA_CHECK(out.shape() == all.shape() && out.dtype() == all.dtype(), "all_gather: output ", out.Describe(),
               " for ", size(), " x ", t.Describe());
  out.CopyFrom(all);
  return std::make_unique<DoneWork>();
}

std::shared_ptr<Communicator> Single() { return std::make_shared<SingleCommunicator>(); }

bool LaunchedByMpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(v) != nullptr) return true;
  }
  // srun: SLURM_NTASKS is also set inside an sbatch script that has not run srun,
  // but SLURM_STEP_ID only inside a step.
  return std::getenv("SLURM_PROCID") != nullptr && std::getenv("SLURM_STEP_ID") != nullptr;
}

absl::StatusOr<std::shared_ptr<Communicator>> Init(Engine engine) {
  static std::mutex mu;
  static std::shared_ptr<Communicator> made;
  static Engine made_engine = Engine::kAuto;
  std::lock_guard<std::mutex> lock(mu);
  if (made != nullptr) {
    if (engine != Engine::kAuto && engine != made_engine) {
      return absl::FailedPreconditionError("dist::Init: already initialized with the " + made->name() + " engine");
    }
    return made;
  }
  absl::StatusOr<std::shared_ptr<Communicator>> c;
  if (engine == Engine::kAuto) {
    c = LaunchedByMpi() ? internal::InitMpi() : absl::StatusOr<std::shared_ptr<Communicator>>(Single());
  } else if (engine == Engine::kMpi) {
    c = internal::InitMpi();
  } else {
    if (!internal::NcclCompiled()) {
      return absl::FailedPreconditionError("dist::Init(kNccl): this build has no CUDA (build with --config=cuda)");
    }
    absl::StatusOr<std::shared_ptr<Communicator>> mpi = internal::InitMpi();
    if (!mpi.ok()) return mpi.status();
    c = internal::InitNccl(*mpi);
  }
  if (!c.ok()) return c.status();
  made = *c;
  made_engine = engine;
  return made;
}

namespace internal {
void CheckTensor(const char* collective, const Tensor& t) {
  QUANTA_CHECK(t.defined(), collective, ": undefined tensor");
  QUANTA_CHECK(t.is_contiguous(), collective, ": ", t.Describe(), " is not contiguous");
  QUANTA_CHECK(!t.is_quantized(), collective, ": ", t.Describe(),
               " is quantized; exchange its bytes as u8 (the parameters travel separately)");
  DType d = t.dtype();
  QUANTA_CHECK(d == DType::kF32 || d == DType::kF64 || d == DType::kI64 || d == DType::kI32 || d == DType::kU8 ||
                   d == DType::kI8,
               collective, ": ", t.Describe(), ": dtype not carried (f32, f64, i64, i32, u8, i8)");
}
}  // namespace internal

}  // namespace quanta::dist

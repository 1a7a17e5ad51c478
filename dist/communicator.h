// Collective communication between the processes of one training job: the
// interface, and Init(), which picks the engine the launcher implies. Engines:
// MPI (OpenMPI from Debian; CPU tensors) and NCCL (--config=cuda; CUDA tensors,
// its unique id broadcast over MPI). Nothing here opens a socket: the engines
// bring their own transports. Not here: what to exchange (dist/ddp.h).
//
//   absl::StatusOr<std::shared_ptr<dist::Communicator>> comm = dist::Init();  // mpirun -np 4 ...
//   Tensor g = ...;                                     // the same shape on every rank
//   (*comm)->AllReduce(g, dist::ReduceOp::kMean);       // in place
//   (*comm)->Broadcast(w, /*root=*/0);
//   Tensor all = (*comm)->AllGather(x);                 // (size * x.size(0), ...)
//   if ((*comm)->rank() == 0) Save(...);
//   (*comm)->Abort("rank 1: the data is missing");      // stops every rank, never hangs
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace quanta::dist {

enum class ReduceOp { kSum, kMean, kMin, kMax };

// A collective started without waiting (MPI_Iallreduce and kin). Wait() returns
// when the result is in place; Test() lets the engine progress and says whether
// it is. The tensors it was started on must stay alive until then.
class Work {
 public:
  virtual ~Work() = default;
  virtual void Wait() = 0;
  virtual bool Test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "mpi", "nccl", "single"

  // Every rank calls each collective in the same order with tensors of the same
  // shape and dtype (contiguous, on the engine's device); misuse throws
  // quanta::Error naming the collective, shape and dtype.
  virtual void AllReduce(Tensor& t, ReduceOp op) = 0;  // in place
  virtual void Broadcast(Tensor& t, int root) = 0;     // in place
  // Concatenation of every rank's t along dim 0, in rank order.
  virtual Tensor AllGather(const Tensor& t) = 0;
  virtual void Barrier() = 0;
  // Started now, finished by the returned Work (sum only for the reduction; u8
  // payloads for the gather). The default runs the blocking form.
  virtual std::unique_ptr<Work> AllReduceAsync(Tensor& t);
  virtual std::unique_ptr<Work> AllGatherAsync(const Tensor& t, Tensor& out);  // out: (size * t.size(0), ...)
  // Prints "rank R of N: message" to stderr and ends every process of the job.
  [[noreturn]] virtual void Abort(const std::string& message) = 0;
};

// One process, no engine: every collective is the identity. What a run that was
// not launched by mpirun or srun gets.
std::shared_ptr<Communicator> Single();

enum class Engine { kAuto, kMpi, kNccl };
// kAuto: MPI when the environment says a launcher started this process
// (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK, SLURM_NTASKS with SLURM_PROCID),
// else Single(). kNccl needs a CUDA build and a GPU per rank (the rank's GPU is
// rank % devices); it runs MPI underneath for the unique id. Calling Init twice
// returns the same communicator.
absl::StatusOr<std::shared_ptr<Communicator>> Init(Engine engine = Engine::kAuto);
// Whether a launcher started this process (the test kAuto applies).
bool LaunchedByMpi();

namespace internal {
// Engine entry points (dist/mpi.cc, dist/nccl.cc).
absl::StatusOr<std::shared_ptr<Communicator>> InitMpi();
absl::StatusOr<std::shared_ptr<Communicator>> InitNccl(const std::shared_ptr<Communicator>& mpi);
bool NcclCompiled();
// Throws unless t is contiguous and of a dtype MPI/NCCL can carry.
void CheckTensor(const char* collective, const Tensor& t);
}  // namespace internal

}  // namespace quanta::dist

// Distributed benchmark: the data-parallel ResNet-20 step (CIFAR shape, 100
// classes, batch 128 per rank, 1 thread per rank) on 1 and on 2 MPI ranks of
// this machine, with f32, 8-bit and 4-bit gradient exchange: median step time,
// images/s, scaling efficiency, the time a step waits for the exchange after
// backward, and bytes sent per step. A program, not a test.
//
//   bazel run //apps:bench_dist                      # starts mpirun -np 1 and -np 2 itself
//   bazel run //apps:bench_dist -- --out=docs/distributed_bench.md
// With --worker it is one rank of such a run (what mpirun starts) and prints
// one "RESULT key=value ..." line per exchange from rank 0.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "apps/trainer.h"
#include "autograd/autograd.h"
#include "core/backend.h"
#include "dist/communicator.h"
#include "dist/ddp.h"
#include "models/resnet_cifar.h"
#include "nn/functional.h"
#include "nn/optim.h"
#include "nn/safetensors.h"

ABSL_FLAG(bool, worker, false, "internal: run as one rank (mpirun starts these)");
ABSL_FLAG(int, batch, 128, "images per step per rank");
ABSL_FLAG(int, steps, 20, "timed steps per exchange (after one warm-up step)");
ABSL_FLAG(int64_t, bucket_kb, 256, "gradient bucket size in KiB");
ABSL_FLAG(int, max_ranks, 2, "measure 1 .. this many ranks");
ABSL_FLAG(std::string, out, "", "also write the table as markdown to this file (relative to the workspace)");

namespace quanta {
namespace {

using Clock = std::chrono::steady_clock;

int Worker() {
  auto comm = dist::Init(dist::Engine::kMpi);
  if (!comm.ok()) {
    std::fprintf(stderr, "%s\n", std::string(comm.status().message()).c_str());
    return 1;
  }
  SetNumThreads(1);
  const int batch = absl::GetFlag(FLAGS_batch), steps = absl::GetFlag(FLAGS_steps);
  for (int bits : {32, 8, 4}) {
    Generator gen(0);
    auto net = models::CifarResNet::Make(20, 100, &gen);
    dist::DistributedDataParallel ddp(*net, *comm, {.bucket_bytes = absl::GetFlag(FLAGS_bucket_kb) << 10, .grad_bits = bits});
    nn::SGD opt({{net->Parameters()}}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4});
    Generator data_gen(1 + (*comm)->rank());
    Tensor images = Normal({batch, 3, 32, 32}, 0, 1, &data_gen);
    std::vector<int64_t> label_values(batch);
    for (int i = 0; i < batch; ++i) label_values[i] = (i * 37 + (*comm)->rank()) % 100;
    Tensor labels = Tensor::FromVector<int64_t>(label_values, {batch});
    std::vector<double> step_s, wait_s, backward_s;
    for (int step = 0; step <= steps; ++step) {
      (*comm)->Barrier();  // steps start together: a step's time is the slowest rank's
      auto start = Clock::now();
      opt.ZeroGrad();
      Tensor loss = CrossEntropy(net->Forward(images), labels);
      ddp.Backward(loss);
      opt.Step();
      double s = std::chrono::duration<double>(Clock::now() - start).count();
      if (step > 0) {
        step_s.push_back(s);
        wait_s.push_back(ddp.stats().wait_seconds);
      }
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    if ((*comm)->rank() == 0) {
      std::printf("RESULT ranks=%d bits=%d step_s=%.5f wait_s=%.5f bytes=%lld f32_bytes=%lld buckets=%d in_backward=%lld "
                  "params=%lld\n",
                  (*comm)->size(), bits, median(step_s), median(wait_s), static_cast<long long>(ddp.stats().bytes_sent),
                  static_cast<long long>(ddp.stats().f32_bytes), ddp.stats().buckets,
                  static_cast<long long>(ddp.stats().launched_in_backward), static_cast<long long>(net->NumParameters()));
      std::fflush(stdout);
    }
  }
  return 0;
}

// "ranks=2 bits=8 ..." -> {ranks: 2, bits: 8, ...}
std::map<std::string, double> ParseResult(const std::string& line) {
  std::map<std::string, double> out;
  for (absl::string_view part : absl::StrSplit(line.substr(7), ' ', absl::SkipEmpty())) {
    std::vector<std::string> kv = absl::StrSplit(part, '=');
    double v;
    if (kv.size() == 2 && absl::SimpleAtod(kv[1], &v)) out[kv[0]] = v;
  }
  return out;
}

}  // namespace
}  // namespace quanta

int main(int argc, char** argv) {
  using namespace quanta;
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_worker)) return Worker();
  char self[4096];
  ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) {
    std::fprintf(stderr, "error: cannot find this program's path (/proc/self/exe)\n");
    return 1;
  }
  self[len] = '\0';
  std::vector<std::map<std::string, double>> rows;
  for (int ranks = 1; ranks <= absl::GetFlag(FLAGS_max_ranks); ++ranks) {
    std::string cmd = absl::StrCat("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe "
                                   "--bind-to none --mca btl self,vader -np ", ranks, " ", self, " --worker --batch=",
                                   absl::GetFlag(FLAGS_batch), " --steps=", absl::GetFlag(FLAGS_steps),
                                   " --bucket_kb=", absl::GetFlag(FLAGS_bucket_kb), " 2>&1");
    std::fprintf(stderr, "running: %s\n", cmd.c_str());
    FILE* p = popen(cmd.c_str(), "r");
    if (p == nullptr) {
      std::fprintf(stderr, "error: cannot start mpirun (tools/setup.sh installs openmpi-bin)\n");
      return 1;
    }
    char buf[4096];
    while (fgets(buf, sizeof(buf), p) != nullptr) {
      std::string line(buf);
      if (line.rfind("RESULT ", 0) == 0) {
        rows.push_back(ParseResult(line));
      } else {
        std::fputs(buf, stderr);
      }
    }
    if (pclose(p) != 0) {
      std::fprintf(stderr, "error: mpirun -np %d failed\n", ranks);
      return 1;
    }
  }
  const int batch = absl::GetFlag(FLAGS_batch);
  std::map<int, double> one_rank;  // bits -> step seconds on 1 rank
  for (const auto& r : rows) {
    if (r.at("ranks") == 1) one_rank[static_cast<int>(r.at("bits"))] = r.at("step_s");
  }
  const double params = rows.empty() ? 0 : rows[0].at("params");
  std::string table = absl::StrFormat(
      "ResNet-20 (CIFAR shape, 100 classes, %.0f parameters), batch %d per rank, 1 thread per rank, random data, "
      "%d KiB buckets; median of %d steps after a warm-up; %s.\n\n"
      "| ranks | exchange | step (ms) | images/s (all ranks) | scaling efficiency | wait after backward (ms) | "
      "share of the step | bytes sent per step per rank | bytes per parameter | buckets (started during backward) |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n",
      params, batch, static_cast<int>(absl::GetFlag(FLAGS_bucket_kb)), absl::GetFlag(FLAGS_steps), apps::CpuName());
  for (const auto& r : rows) {
    const int ranks = static_cast<int>(r.at("ranks")), bits = static_cast<int>(r.at("bits"));
    const double step = r.at("step_s"), wait = r.at("wait_s");
    // Scaling efficiency: throughput on N ranks over N times one rank's (same exchange).
    double eff = one_rank.count(bits) ? one_rank[bits] / step : 0;
    absl::StrAppendFormat(&table, "| %d | %s | %.1f | %.0f | %s | %.1f | %.1f%% | %.0f | %.3f | %.0f (%.0f) |\n", ranks,
                          bits == 32 ? "f32" : absl::StrCat(bits, "-bit + error feedback"), 1e3 * step,
                          ranks * batch / step, ranks == 1 ? "-" : absl::StrFormat("%.0f%%", 100 * eff), 1e3 * wait,
                          100 * wait / step, r.at("bytes"), r.at("bytes") / std::max(1.0, params), r.at("buckets"),
                          r.at("in_backward"));
  }
  absl::StrAppend(&table, "\nOne rank's exchange is the identity (no engine traffic); its bytes are what it would "
                          "send. Scaling efficiency: images/s on N ranks over N times one rank's.\n");
  std::printf("%s", table.c_str());
  std::string out = absl::GetFlag(FLAGS_out);
  if (!out.empty()) {
    if (out[0] != '/' && std::getenv("BUILD_WORKSPACE_DIRECTORY")) out = std::string(std::getenv("BUILD_WORKSPACE_DIRECTORY")) + "/" + out;
    std::string text = "# Distributed training: measured\n\nWritten by `bazel run //apps:bench_dist -- --out=docs/distributed_bench.md`.\n\n" + table;
    absl::Status s = WriteFileAtomically(out, text);
    if (!s.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    std::printf("wrote %s\n", out.c_str());
  }
  return 0;
}

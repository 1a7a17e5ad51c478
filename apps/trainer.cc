// RunTraining: data, model, quantization, the loop, evaluation and conversion.
#include "apps/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "autograd/autograd.h"
#include "core/backend.h"
#include "core/grad_mode.h"
#include "data/archive.h"
#include "data/loader.h"
#include "data/partition.h"
#include "data/readers.h"
#include "dist/ddp.h"
#include "models/registry.h"
#include "nn/checkpoint.h"
#include "nn/functional.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "quant/adaround.h"
#include "quant/bit_search.h"
#include "quant/convert.h"
#include "quant/fp8.h"
#include "quant/onnx_export.h"
#include "quant/prepare.h"

namespace quanta::apps {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The epochs so far in a checkpoint's metadata ("history"), so that a resumed
// run returns every epoch's figures: one line per epoch, its seven fields to
// 17 digits.
std::string HistoryText(const std::vector<EpochMetrics>& history) {
  std::string text;
  for (const EpochMetrics& m : history) {
    absl::StrAppend(&text, absl::StrFormat("%d %.17g %.17g %.17g %.17g %.17g %.17g\n", m.epoch, m.train_loss,
                                           m.train_accuracy, m.test_accuracy, m.lr, m.images_per_second, m.seconds));
  }
  return text;
}
std::optional<std::vector<EpochMetrics>> ParseHistory(const std::string& text) {
  std::vector<EpochMetrics> history;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    EpochMetrics m{};
    std::istringstream fields(line);
    if (!(fields >> m.epoch >> m.train_loss >> m.train_accuracy >> m.test_accuracy >> m.lr >> m.images_per_second >>
          m.seconds)) {
      return std::nullopt;
    }
    history.push_back(m);
  }
  return history;
}

struct Data {
  std::shared_ptr<data::ImageDataset> train, test;
  int64_t classes, channels, size;
  std::vector<float> mean, std;
};

std::shared_ptr<data::ImageDataset> Subset(const std::shared_ptr<data::ImageDataset>& d, int64_t n) {
  if (n <= 0 || n >= d->size()) return d;
  std::vector<int64_t> labels(d->labels().begin(), d->labels().begin() + n);
  return std::make_shared<data::ImageDataset>(d->images().Narrow(0, 0, n).Contiguous(), labels, d->num_classes(),
                                              d->class_names());
}

std::string DefaultDataDir() {
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/quanta/data";
}

// Per-channel mean and std of u8 (N, H, W, C) images in [0, 1] (first 10k images).
std::pair<std::vector<float>, std::vector<float>> Moments(const data::ImageDataset& d) {
  NoGradGuard no_grad;
  Tensor x = d.images().Narrow(0, 0, std::min<int64_t>(d.size(), 10000)).To(DType::kF32);
  x = Div(x, 255.0);
  std::vector<float> mean = Mean(x, {0, 1, 2}).ToVector<float>();
  std::vector<float> var = Var(x, {0, 1, 2}).ToVector<float>();
  std::vector<float> std(var.size());
  for (size_t i = 0; i < var.size(); ++i) std[i] = std::sqrt(std::max(var[i], 1e-8f));
  return {mean, std};
}

absl::StatusOr<Data> LoadData(const TrainConfig& c, std::ostream& log) {
  Data d;
  std::string dir = c.data_dir;
  absl::StatusOr<std::shared_ptr<data::ImageDataset>> train, test;
  if (c.dataset == "cifar100" || c.dataset == "cifar10") {
    if (dir.empty()) dir = DefaultDataDir();
    data::CifarKind kind = c.dataset == "cifar100" ? data::CifarKind::k100 : data::CifarKind::k10;
    train = data::ReadCifar(dir, kind, data::Split::kTrain);
    if (!train.ok() && kind == data::CifarKind::k100) {
      log << "CIFAR-100 is not in " << dir << " (" << train.status().message() << "); downloading it" << std::endl;
      absl::Status got = data::EnsureCifar100(dir);
      if (!got.ok()) return got;
      train = data::ReadCifar(dir, kind, data::Split::kTrain);
    }
    if (!train.ok()) {
      return absl::NotFoundError(absl::StrCat(train.status().message(),
                                              kind == data::CifarKind::k10
                                                  ? "; put cifar-10-binary.tar.gz's cifar-10-batches-bin/ in --data_dir"
                                                  : ""));
    }
    test = data::ReadCifar(dir, kind, data::Split::kTest);
    d.mean = kind == data::CifarKind::k100 ? std::vector<float>{0.507f, 0.487f, 0.441f}
                                           : std::vector<float>{0.4914f, 0.4822f, 0.4465f};
    d.std = kind == data::CifarKind::k100 ? std::vector<float>{0.267f, 0.256f, 0.276f}
                                          : std::vector<float>{0.2470f, 0.2435f, 0.2616f};
  } else if (c.dataset == "fashion_mnist") {
    if (dir.empty()) dir = data::kFashionMnistDir;
    train = data::ReadFashionMnist(data::Split::kTrain, dir);
    test = data::ReadFashionMnist(data::Split::kTest, dir);
    d.mean = {0.2860f};  // the Fashion-MNIST table's normalization (issue 7)
    d.std = {0.3530f};
  } else if (c.dataset == "imagefolder") {
    if (dir.empty()) return absl::InvalidArgumentError("--dataset=imagefolder needs --data_dir (with train/ and test/)");
    train = data::ReadImageFolder(dir + "/train", c.image_size, c.image_size);
    test = data::ReadImageFolder(dir + "/test", c.image_size, c.image_size);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --dataset '", c.dataset, "' (cifar100, cifar10, fashion_mnist, imagefolder)"));
  }
  if (!train.ok()) return train.status();
  if (!test.ok()) return test.status();
  d.train = Subset(*train, c.train_subset);
  d.test = Subset(*test, c.test_subset);
  d.classes = d.train->num_classes();
  d.channels = d.train->images().size(3);
  d.size = d.train->images().size(1);
  if (d.mean.empty()) std::tie(d.mean, d.std) = Moments(*d.train);
  return d;
}

using Forward = std::function<Tensor(const Tensor&)>;

// "cpu", "cuda" or "cuda:N", available in this build and on this machine.
absl::StatusOr<Device> ParseDevice(const std::string& name) {
  Device device;
  if (name == "cpu") return Device::Cpu();
  if (name == "cuda") {
    device = Device::Cuda(0);
  } else if (int index = 0; absl::StartsWith(name, "cuda:") && absl::SimpleAtoi(name.substr(5), &index) && index >= 0) {
    device = Device::Cuda(index);
  } else {
    return absl::InvalidArgumentError("unknown --device '" + name + "' (cpu, cuda, cuda:N)");
  }
  if (FindBackend(DeviceType::kCuda) == nullptr) {
    return absl::FailedPreconditionError("--device=" + name + ": this build has no CUDA backend (build with --config=cuda)");
  }
  std::string why = FindBackend(DeviceType::kCuda)->Unavailable();
  if (!why.empty()) return absl::FailedPreconditionError("--device=" + name + ": " + why);
  if (!IsAvailable(device)) return absl::FailedPreconditionError("--device=" + name + ": no such device");
  return device;
}

// Sums (or takes the largest of) each value over the ranks, in place: every
// rank gets the totals. The identity on one rank.
using RankReduce = std::function<void(std::vector<double>&, dist::ReduceOp)>;

// Over a loader's batches: the top-1 accuracy of `a`, of `b` (when given), and
// the share of examples where the two predict the same class.
// With `step` (one value per class), the largest |logit_a - logit_b| in those
// units as well. With `reduce`, the loader holds this rank's part of the data
// set and the figures are the whole set's (Note [Distributed evaluation]).
struct Scores {
  double a = 0, b = 0, same = 0, max_diff = 0, max_diff_steps = 0;
};
Scores Score(const data::DataLoader& loader, const Forward& a, const Forward& b = nullptr,
             const std::vector<double>& step = {}, const RankReduce& reduce = nullptr) {
  NoGradGuard no_grad;
  auto it = loader.Start(0);
  data::Batch batch;
  int64_t right_a = 0, right_b = 0, same = 0, total = 0;
  Scores r;
  while (it->Next(&batch)) {
    std::vector<int64_t> label = batch.labels.ToVector<int64_t>();
    Tensor la = a(batch.data).To(DType::kF32).To(Device::Cpu()), lb = b ? b(batch.data).To(DType::kF32).To(Device::Cpu()) : la;
    std::vector<int64_t> pa = Argmax(la, 1).ToVector<int64_t>(), pb = Argmax(lb, 1).ToVector<int64_t>();
    std::vector<float> va = la.Contiguous().ToVector<float>(), vb = lb.Contiguous().ToVector<float>();
    int64_t classes = la.size(1);
    for (size_t k = 0; k < va.size(); ++k) {
      double d = std::abs(static_cast<double>(va[k]) - vb[k]);
      r.max_diff = std::max(r.max_diff, d);
      if (static_cast<int64_t>(step.size()) == classes) r.max_diff_steps = std::max(r.max_diff_steps, d / step[k % classes]);
    }
    for (size_t i = 0; i < label.size(); ++i) {
      right_a += pa[i] == label[i];
      right_b += pb[i] == label[i];
      same += pa[i] == pb[i];
    }
    total += static_cast<int64_t>(label.size());
  }
  if (reduce) {
    // Counts below 2^53 travel exactly as doubles.
    std::vector<double> counts = {static_cast<double>(right_a), static_cast<double>(right_b), static_cast<double>(same),
                                  static_cast<double>(total)};
    std::vector<double> largest = {r.max_diff, r.max_diff_steps};
    reduce(counts, dist::ReduceOp::kSum);
    reduce(largest, dist::ReduceOp::kMax);
    right_a = static_cast<int64_t>(counts[0]), right_b = static_cast<int64_t>(counts[1]);
    same = static_cast<int64_t>(counts[2]), total = static_cast<int64_t>(counts[3]);
    r.max_diff = largest[0], r.max_diff_steps = largest[1];
  }
  if (total == 0) return {};
  r.a = static_cast<double>(right_a) / total;
  r.b = static_cast<double>(right_b) / total;
  r.same = static_cast<double>(same) / total;
  return r;
}

// Per output channel c of the last integer layer, s_in * max_k |w_ck|: the most
// one step of its input (one level of one feature) moves logit c. A logit
// difference in these units says how many input levels it amounts to. Empty
// when the last layer is a float layer.
std::vector<double> OutputSteps(const quant::IntegerModel& m) {
  for (int i = static_cast<int>(m.nodes().size()) - 1; i > 0; --i) {
    const quant::IntegerNode& n = m.node(i);
    if (!n.weight.defined()) continue;
    if (!n.weight.is_quantized() || n.kind != quant::NodeKind::kLinear) return {};
    double s_in = m.node(n.inputs[0]).out_params.scales.at(0);
    const std::vector<double>& s_w = n.weight.qparams().scales;  // along axis 1 of (K, N)
    int64_t K = n.weight.size(0), N = n.weight.size(1);
    std::vector<int32_t> q = n.weight.IntRepr();
    std::vector<double> steps(N, 0.0);
    for (int64_t c = 0; c < N; ++c) {
      int32_t top = 0;
      for (int64_t k = 0; k < K; ++k) top = std::max(top, std::abs(q[k * N + c]));
      steps[c] = s_in * s_w[s_w.size() == 1 ? 0 : c] * std::max(top, 1);
    }
    return steps;
  }
  return {};
}

// Images per second of `forward` on one batch (median of 5 after a warm-up);
// a device's queued work is waited for inside each timing.
double ImagesPerSecond(const Tensor& batch, const Forward& forward) {
  NoGradGuard no_grad;
  Backend& backend = GetBackend(batch.device());
  forward(batch);
  backend.Synchronize(batch.device().index);
  std::vector<double> s;
  for (int i = 0; i < 5; ++i) {
    auto t = Clock::now();
    forward(batch);
    backend.Synchronize(batch.device().index);
    s.push_back(Since(t));
  }
  std::sort(s.begin(), s.end());
  return batch.size(0) / s[2];
}

// Note [Policies as data]: the policy file, or the struct the flags describe.
// Flags are never formatted as policy text and parsed back, so a bad flag is
// reported under its own name ("--wbits=9: ...", not "policy:1: bits 9/8").
absl::StatusOr<quant::MixedPrecisionPolicy> Policy(const TrainConfig& c, int64_t total_steps) {
  absl::StatusOr<quant::MixedPrecisionPolicy> p;
  if (!c.policy_file.empty()) {
    p = quant::MixedPrecisionPolicy::Load(c.policy_file);
  } else {
    for (auto [flag, bits] : {std::pair<const char*, int>{"wbits", c.wbits}, {"abits", c.abits}}) {
      if (bits < quant::kMinPolicyBits || bits > quant::kMaxPolicyBits) {
        return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", bits, ": bits must lie in [",
                                                       quant::kMinPolicyBits, ", ", quant::kMaxPolicyBits, "]"));
      }
    }
    std::optional<quant::QuantizerKind> kind = quant::QuantizerKindFromName(c.quantizer);
    if (!kind) {
      return absl::InvalidArgumentError("--quantizer=" + c.quantizer + ": unknown quantizer (" +
                                        quant::QuantizerNames() + ")");
    }
    p = quant::MixedPrecisionPolicy{};
    p->defaults.weight_bits = c.wbits;
    p->defaults.act_bits = c.abits;
    p->defaults.kind = *kind;
    for (auto [flag, name, format] :
         {std::tuple<const char*, const std::string&, std::optional<BlockFormat>*>{"wformat", c.wformat,
                                                                                    &p->defaults.weight_format},
          {"aformat", c.aformat, &p->defaults.act_format}}) {
      if (name.empty()) continue;
      *format = quant::BlockFormatFromName(name);
      if (!*format) {
        return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", name, ": unknown block format (",
                                                       quant::BlockFormatNames(), ")"));
      }
    }
    p->first_last_8bit = c.first_last_8bit;
  }
  if (!p.ok()) return p.status();
  if (!(c.ema_decay >= 0 && c.ema_decay < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--ema_decay=", c.ema_decay, " is outside [0, 1)"));
  }
  p->defaults.ema_decay = c.ema_decay;
  if (c.lsq_init != "paper" && c.lsq_init != "mse") {
    return absl::InvalidArgumentError("--lsq_init=" + c.lsq_init + ": paper or mse");
  }
  p->defaults.lsq_init = c.lsq_init == "mse" ? quant::LsqInit::kMse : quant::LsqInit::kPaper;
  if (c.ewgs_delta != "auto") {
    if (!absl::SimpleAtod(c.ewgs_delta, &p->defaults.ewgs_delta) || p->defaults.ewgs_delta < 0) {
      return absl::InvalidArgumentError("--ewgs_delta=" + c.ewgs_delta + ": expected auto or a value >= 0");
    }
  }
  return p;
}

std::string Duration(double seconds) {
  int s = static_cast<int>(seconds);
  return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
}

}  // namespace

std::string CommandLine(const TrainConfig& c, const std::string& program) {
  TrainConfig d;
  std::vector<std::string> flags;
  auto add = [&](bool differs, const std::string& flag) {
    if (differs) flags.push_back(flag);
  };
  add(c.dataset != d.dataset, "--dataset=" + c.dataset);
  add(c.data_dir != d.data_dir, "--data_dir=" + c.data_dir);
  add(c.model != d.model, "--model=" + c.model);
  add(c.epochs != d.epochs, absl::StrCat("--epochs=", c.epochs));
  add(c.batch != d.batch, absl::StrCat("--batch=", c.batch));
  add(c.lr != d.lr, absl::StrCat("--lr=", c.lr));
  add(c.weight_decay != d.weight_decay, absl::StrCat("--weight_decay=", c.weight_decay));
  add(c.nesterov != d.nesterov, absl::StrCat("--nesterov=", c.nesterov ? "true" : "false"));
  add(c.schedule != d.schedule, "--schedule=" + c.schedule);
  add(c.schedule == "cosine" && c.warmup_epochs != d.warmup_epochs, absl::StrCat("--warmup_epochs=", c.warmup_epochs));
  add(c.augment != d.augment, absl::StrCat("--augment=", c.augment ? "true" : "false"));
  add(c.channels_last != d.channels_last, absl::StrCat("--channels_last=", c.channels_last ? "true" : "false"));
  add(true, absl::StrCat("--seed=", c.seed));
  add(c.quant != d.quant, "--quant=" + c.quant);
  add(c.quant != "none" && c.policy_file.empty(),
      absl::StrCat(c.wformat.empty() ? absl::StrCat("--wbits=", c.wbits) : "--wformat=" + c.wformat,
                   c.aformat.empty() ? absl::StrCat(" --abits=", c.abits) : " --aformat=" + c.aformat,
                   " --quantizer=", c.quantizer));
  add(c.quant != "none" && !c.first_last_8bit, "--first_last_8bit=false");
  const bool ema = c.quantizer == "ema" || c.quantizer == "ewgs" || !c.policy_file.empty();  // the decay matters
  add(c.quant != "none" && ema && c.ema_decay != d.ema_decay, absl::StrCat("--ema_decay=", c.ema_decay));
  add(c.quant == "qat" && c.ewgs_delta != d.ewgs_delta, "--ewgs_delta=" + c.ewgs_delta);
  add(c.quant != "none" && c.lsq_init != d.lsq_init, "--lsq_init=" + c.lsq_init);
  add(c.quant == "qat" && c.quant_lr_mult != d.quant_lr_mult, absl::StrCat("--quant_lr_mult=", c.quant_lr_mult));
  add(!c.policy_file.empty(), "--policy=" + c.policy_file);
  add(c.bit_search > 0, absl::StrCat("--bit_search=", c.bit_search, " --bit_candidates=", absl::StrJoin(c.bit_candidates, ","),
                                     c.bit_policy_out.empty() ? "" : " --bit_policy_out=" + c.bit_policy_out));
  add(!c.progressive.empty(), "--progressive=" + absl::StrJoin(c.progressive, ","));
  add(!c.amp.empty(), "--amp=" + c.amp);
  add(c.device != d.device, "--device=" + c.device);
  add(!c.init_from.empty(), "--init_from=" + c.init_from);
  add(!c.distill.empty(), absl::StrCat("--distill=", c.distill, " --distill_weight=", c.distill_weight,
                                       " --distill_temperature=", c.distill_temperature));
  add(c.bn_reestimate_batches != d.bn_reestimate_batches, absl::StrCat("--bn_reestimate=", c.bn_reestimate_batches));
  add(c.rounding != d.rounding, "--rounding=" + c.rounding);
  add(c.fp8 != d.fp8, "--fp8=" + c.fp8);
  add(c.fp8 != "none" && c.fp8_gradient != d.fp8_gradient, "--fp8_gradient=" + c.fp8_gradient);
  add(c.rounding != "nearest" && c.adaround_iters != d.adaround_iters,
      absl::StrCat("--adaround_iters=", c.adaround_iters));
  add(c.rounding != "nearest" && c.adaround_lr != d.adaround_lr, absl::StrCat("--adaround_lr=", c.adaround_lr));
  add(c.train_subset != 0, absl::StrCat("--train_subset=", c.train_subset));
  add(c.test_subset != 0, absl::StrCat("--test_subset=", c.test_subset));
  add(c.distributed, "--distributed");
  add(c.sync_bn, "--sync_bn");
  add(c.grad_bits != d.grad_bits, absl::StrCat("--grad_bits=", c.grad_bits));
  add(c.grad_bits != d.grad_bits && !c.error_feedback, "--error_feedback=false");
  add(c.bucket_kb != d.bucket_kb, absl::StrCat("--bucket_kb=", c.bucket_kb));
  add(c.local_steps != d.local_steps, absl::StrCat("--local_steps=", c.local_steps));
  add(c.dirichlet_alpha != d.dirichlet_alpha, absl::StrCat("--dirichlet_alpha=", c.dirichlet_alpha));
  return program + (flags.empty() ? "" : " -- " + absl::StrJoin(flags, " "));
}

std::string CpuName() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, name, family, model;
  int cores = 0;
  auto value = [&](const char* key, std::string* out) {
    if (!absl::StartsWith(line, key)) return;
    size_t colon = line.find(':');
    if (colon != std::string::npos && out->empty()) *out = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  };
  while (std::getline(f, line)) {
    if (absl::StartsWith(line, "processor")) ++cores;
    value("model name", &name);
    value("cpu family", &family);
    value("model\t", &model);
  }
  if (name.empty()) return "unknown CPU";
  return absl::StrCat(name, " (family ", family, " model ", model, "), ", cores, cores == 1 ? " core" : " cores");
}

absl::StatusOr<TrainResult> RunTraining(const TrainConfig& c, std::ostream& log_to) {
  // Distributed: the communicator first (its errors are the launcher's), then
  // only rank 0 speaks.
  std::shared_ptr<dist::Communicator> comm = dist::Single();
  if (c.distributed) {
    absl::StatusOr<std::shared_ptr<dist::Communicator>> got =
        dist::Init(absl::StartsWith(c.device, "cuda") ? dist::Engine::kNccl : dist::Engine::kAuto);
    if (!got.ok()) return got.status();
    comm = *got;
  }
  const int rank = comm->rank(), ranks = comm->size();
  std::ostringstream silent;
  std::ostream& log = rank == 0 ? log_to : silent;
  if (!c.distributed && (c.sync_bn || c.grad_bits != 32 || c.local_steps != 0 || c.dirichlet_alpha != 0)) {
    return absl::InvalidArgumentError("--sync_bn, --grad_bits, --local_steps and --dirichlet_alpha need --distributed");
  }
  if (c.grad_bits != 32 && c.grad_bits != 8 && c.grad_bits != 4) {
    return absl::InvalidArgumentError(absl::StrCat("--grad_bits=", c.grad_bits, ": 32, 8 or 4"));
  }
  if (c.bucket_kb < 1) return absl::InvalidArgumentError(absl::StrCat("--bucket_kb=", c.bucket_kb, ": 1 or more"));
  if (c.local_steps < 0 || !(c.dirichlet_alpha >= 0) || (c.dirichlet_alpha > 0 && c.local_steps == 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--local_steps=", c.local_steps, " --dirichlet_alpha=", c.dirichlet_alpha,
                                                   ": steps >= 0; a Dirichlet split (alpha > 0) is for federated runs "
                                                   "(--local_steps > 0)"));
  }
  if (c.grad_bits != 32 && !absl::StartsWith(c.device, "cpu")) {
    return absl::InvalidArgumentError(absl::StrCat("--grad_bits=", c.grad_bits, " runs on the CPU (the exchange's codec)"));
  }
  if (c.distributed) {
    log << "distributed: " << ranks << " rank" << (ranks == 1 ? "" : "s") << " (" << comm->name() << " engine"
        << (c.local_steps > 0 ? absl::StrCat(", federated averaging every ", c.local_steps, " steps") : ", data parallel")
        << (c.grad_bits != 32 ? absl::StrCat(", ", c.grad_bits, "-bit exchange", c.error_feedback ? " with error feedback" : "")
                              : "")
        << (c.sync_bn ? ", synchronized batch norm" : "") << "), batch " << c.batch << " per rank" << std::endl;
  }
  if (c.quant != "none" && c.quant != "ptq" && c.quant != "qat") {
    return absl::InvalidArgumentError("unknown --quant '" + c.quant + "' (none, ptq, qat)");
  }
  if (!c.amp.empty() && c.amp != "bf16") return absl::InvalidArgumentError("unknown --amp '" + c.amp + "' (bf16)");
  if (c.epochs < 0 || c.batch <= 0) return absl::InvalidArgumentError("--epochs must be >= 0 and --batch > 0");
  if (c.stop_after_epoch < 0 || (c.stop_after_epoch > 0 && c.checkpoint_dir.empty())) {
    return absl::InvalidArgumentError(absl::StrCat("--stop_after_epoch=", c.stop_after_epoch,
                                                   ": needs a count >= 0 and --checkpoint_dir (where --resume continues)"));
  }
  if (!c.distill.empty() && c.quant != "qat") {
    return absl::InvalidArgumentError("--distill needs --quant=qat (the student is trained)");
  }
  if (!(c.distill_weight >= 0 && c.distill_weight <= 1) || !(c.distill_temperature > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--distill_weight=", c.distill_weight, " --distill_temperature=",
                                                   c.distill_temperature, ": need a weight in [0, 1] and T > 0"));
  }
  if (!(c.quant_lr_mult >= 0 && c.quant_lr_mult <= 1e3)) {
    return absl::InvalidArgumentError(absl::StrCat("--quant_lr_mult=", c.quant_lr_mult, ": a multiple of --lr in [0, 1000]"));
  }
  if (c.bn_reestimate_batches < 0 || (c.bn_reestimate_batches > 0 && c.quant != "qat")) {
    return absl::InvalidArgumentError(absl::StrCat("--bn_reestimate=", c.bn_reestimate_batches,
                                                   ": a number of batches >= 0, with --quant=qat"));
  }
  if ((c.fp8 != "none" && c.fp8 != "deepseek") || (c.fp8_gradient != "e4m3" && c.fp8_gradient != "e5m2" && c.fp8_gradient != "f32")) {
    return absl::InvalidArgumentError(absl::StrCat("--fp8=", c.fp8, " --fp8_gradient=", c.fp8_gradient,
                                                   ": --fp8 is none or deepseek, --fp8_gradient e4m3, e5m2 or f32"));
  }
  if (c.fp8 != "none" && c.quant != "none") {
    return absl::InvalidArgumentError("--fp8=" + c.fp8 + " trains in FP8; not with --quant=" + c.quant +
                                      " (QAT and FP8 training do not stack)");
  }
  if (c.rounding != "nearest" && c.rounding != "adaround" && c.rounding != "brecq") {
    return absl::InvalidArgumentError("unknown --rounding '" + c.rounding + "' (nearest, adaround, brecq)");
  }
  if (c.rounding != "nearest" && c.quant != "ptq") {
    return absl::InvalidArgumentError("--rounding=" + c.rounding + " needs --quant=ptq (QAT learns its weights)");
  }
  if (c.adaround_iters < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--adaround_iters=", c.adaround_iters, ": need 1 or more"));
  }
  if (!(c.adaround_lr > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--adaround_lr=", c.adaround_lr, ": need a positive rate"));
  }
  std::string bit_policy = c.bit_policy_out.empty() && !c.checkpoint_dir.empty() ? c.checkpoint_dir + "/policy.txt"
                                                                                 : c.bit_policy_out;
  if (c.bit_search != 0) {
    if (!(c.bit_search >= 2 && c.bit_search <= 8) || c.quant == "none" || c.init_from.empty() ||
        !c.policy_file.empty() || bit_policy.empty() || c.bit_candidates.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--bit_search=", c.bit_search, ": an average of 2 to 8 bits, with --quant=ptq|qat, a trained model "
          "(--init_from=CKPT), no --policy, candidates (--bit_candidates) and a place for the policy "
          "(--bit_policy_out=FILE or --checkpoint_dir)"));
    }
  }
  if (c.threads < 0) return absl::InvalidArgumentError(absl::StrCat("--threads=", c.threads, ": need 0 (default) or more"));
  if (c.threads > 0) SetNumThreads(c.threads);
  absl::StatusOr<Device> device = ParseDevice(c.device);
  if (!device.ok()) return device.status();
  const Device dev = *device;
  absl::StatusOr<Data> loaded = LoadData(c, log);
  if (!loaded.ok()) return loaded.status();
  Data& d = *loaded;
  TrainResult result;
  result.command = CommandLine(c, "bazel run //apps:train");
  result.ranks = ranks;
  const bool federated = c.local_steps > 0;
  int num_shards = ranks, shard = rank;
  if (federated && c.dirichlet_alpha > 0) {
    // Each rank a client with its own examples (the split is the same on every rank).
    std::vector<std::vector<int64_t>> parts =
        data::DirichletSplit(d.train->labels(), d.classes, ranks, c.dirichlet_alpha, c.seed);
    std::vector<int64_t> counts(d.classes, 0);
    for (int64_t i : parts[rank]) ++counts[d.train->labels()[i]];
    d.train = data::Subset(*d.train, parts[rank]);
    num_shards = 1;
    shard = 0;
    Tensor mine = Tensor::FromVector<int64_t>(counts, {1, d.classes});
    Tensor gathered = comm->AllGather(mine);
    log << "Dirichlet split (alpha " << c.dirichlet_alpha << "), examples per class and client:" << std::endl;
    std::vector<int64_t> g = gathered.ToVector<int64_t>();
    for (int r = 0; r < ranks; ++r) {
      log << "  client " << r << ":";
      int64_t total = 0;
      for (int64_t k = 0; k < d.classes; ++k) {
        log << " " << g[r * d.classes + k];
        total += g[r * d.classes + k];
      }
      log << " (" << total << ")" << std::endl;
    }
  }

  std::vector<data::TransformPtr> train_tf = {data::ToTensor()};
  if (c.augment) {
    train_tf.push_back(data::RandomCrop(d.size, d.size >= 32 ? 4 : 2));
    train_tf.push_back(data::HorizontalFlip());
  }
  train_tf.push_back(data::Normalize(d.mean, d.std));
  auto test_tf = data::Compose({data::ToTensor(), data::Normalize(d.mean, d.std)});
  // Channels-last batches on the CPU only: the CUDA kernels read NCHW.
  const bool channels_last = c.channels_last && dev.is_cpu();
  data::DataLoader train_loader(d.train, data::Compose(train_tf),
                                {.batch_size = c.batch, .shuffle = true, .seed = c.seed, .drop_last = true,
                                 .workers = c.workers, .device = dev, .channels_last = channels_last,
                                 .num_shards = num_shards, .shard = shard});
  // Note [Distributed evaluation]: with several ranks, each scores its own
  // contiguous part of the test set and the counts are summed over the ranks
  // (Score's `reduce`), so an evaluation costs each rank 1/ranks of the set,
  // not all of it, and every rank gets the whole set's figures. Data parallel
  // ranks hold the same parameters, but batch norm's running statistics are
  // each rank's own (each normalizes its own batches): rank 0's state goes to
  // every rank before each evaluation (as PyTorch's DDP broadcasts buffers),
  // so the figures are those of rank 0's model, the one rank 0 saves, on the
  // whole set. Training reads no running statistic, so its steps are as
  // before. Federated runs end each epoch on the averaged model, already the
  // same on every rank.
  RankReduce reduce;
  std::shared_ptr<data::ImageDataset> test_part = d.test;
  if (ranks > 1) {
    const Device on = comm->name() == "nccl" ? dev : Device::Cpu();  // the engine's device
    reduce = [comm, on](std::vector<double>& v, dist::ReduceOp op) {
      Tensor t = Tensor::FromVector<double>(v, {static_cast<int64_t>(v.size())}).To(on);
      comm->AllReduce(t, op);
      v = t.To(Device::Cpu()).ToVector<double>();
    };
    const int64_t n = d.test->size();
    std::vector<int64_t> mine;
    for (int64_t i = n * rank / ranks; i < n * (rank + 1) / ranks; ++i) mine.push_back(i);
    test_part = data::Subset(*d.test, mine);
  }
  data::DataLoader test_loader(test_part, test_tf, {.batch_size = 256, .shuffle = false, .workers = c.workers, .device = dev,
                                                 .channels_last = channels_last});
  data::DataLoader calib_loader(d.train, test_tf, {.batch_size = c.batch, .shuffle = true, .seed = c.seed + 1,
                                                   .workers = c.workers, .device = dev, .channels_last = channels_last});

  Generator gen(c.seed);
  std::shared_ptr<nn::Layer> net;
  try {
    net = models::Make(c.model, d.classes, d.channels, &gen);
  } catch (const Error& e) {
    return absl::InvalidArgumentError(e.what());
  }
  result.float_bytes = 4 * net->NumParameters();
  if (!c.init_from.empty()) {
    auto meta = nn::LoadCheckpoint(c.init_from, *net);
    if (!meta.ok()) return meta.status();
  }
  // The teacher: the same architecture from --distill, in eval mode, never trained.
  std::shared_ptr<nn::Layer> teacher;
  if (!c.distill.empty()) {
    Generator teacher_gen(c.seed);
    teacher = models::Make(c.model, d.classes, d.channels, &teacher_gen);
    auto meta = nn::LoadCheckpoint(c.distill, *teacher);
    if (!meta.ok()) return meta.status();
    teacher->To(dev);
    teacher->Eval();
  }
  // Every rank takes the same number of steps (clients of a Dirichlet split
  // differ in size: the smallest sets the pace).
  int64_t steps_per_epoch = train_loader.NumBatches();
  if (ranks > 1) {
    Tensor steps = Tensor::FromVector<int64_t>({steps_per_epoch}, {1});
    comm->AllReduce(steps, dist::ReduceOp::kMin);
    steps_per_epoch = steps.item<int64_t>();
    if (steps_per_epoch == 0) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", rank, ": a rank has fewer than --batch=", c.batch,
                                                     " training examples"));
    }
  }
  const int64_t total_steps = std::max<int64_t>(1, steps_per_epoch * c.epochs);
  TrainConfig policy_config = c;  // --bit_search replaces the policy with the one it writes
  if (c.bit_search != 0) {
    // Note [Bit search] in quant/bit_search.h, on the calibration batches (unaugmented training images).
    std::vector<data::Batch> batches;
    auto it = calib_loader.Start(0);
    for (data::Batch b; static_cast<int>(batches.size()) < c.calibration_batches && it->Next(&b);) batches.push_back(b);
    net->Eval();
    auto loss = [&] {
      double sum = 0;
      for (const data::Batch& b : batches) sum += CrossEntropy(net->Forward(b.data), b.labels).item<float>();
      return sum / std::max<size_t>(1, batches.size());
    };
    auto start = Clock::now();
    quant::BitSearchOptions o{.candidates = c.bit_candidates, .budget = c.bit_search, .act_bits = c.abits,
                              .first_last_8bit = c.first_last_8bit, .quantizer = c.quantizer};
    std::vector<quant::LayerSensitivity> layers = quant::MeasureSensitivity(*net, loss, o);
    quant::BitSearchResult chosen = quant::SearchBits(layers, o);
    std::string text = quant::BitPolicyText(layers, chosen, o);
    // Every rank chose the same (same batches, same model); rank 0 writes.
    absl::Status written = rank == 0 ? WriteFileAtomically(bit_policy, text) : absl::OkStatus();
    comm->Barrier();
    if (!written.ok()) return written;
    log << absl::StrFormat("bit search: %d layers, %d candidates, on %d calibration batches, %.1f s; %.3f weight bits "
                           "on average (budget %g); policy written to %s:\n",
                           layers.size(), o.candidates.size(), batches.size(), Since(start), chosen.average_bits,
                           c.bit_search, bit_policy)
        << text << std::flush;
    net->Train();
    policy_config.policy_file = bit_policy;
  }
  if (c.fp8 == "deepseek") {
    quant::Fp8Recipe recipe;
    recipe.gradient = c.fp8_gradient == "e5m2"  ? DType::kF8E5M2
                      : c.fp8_gradient == "f32" ? DType::kF32
                                                : DType::kF8E4M3;
    log << quant::PrepareFp8Training(*net, recipe).ToString() << std::endl;
  }
  quant::PrepareReport report;
  if (c.quant == "qat") {
    absl::StatusOr<quant::MixedPrecisionPolicy> policy = Policy(policy_config, total_steps);
    if (!policy.ok()) return policy.status();
    report = quant::PrepareQat(*net, *policy);
    log << report.ToString() << std::flush;
    log << absl::StrFormat("activation EMA decay %g (--ema_decay; weights use their current range)", c.ema_decay)
        << std::endl;
  }
  const bool auto_ewgs = c.quant == "qat" && c.ewgs_delta == "auto" &&
                         std::any_of(report.rows.begin(), report.rows.end(), [](const quant::PrepareReport::Row& r) {
                           return r.config.kind == quant::QuantizerKind::kEwgs;
                         });
  net->To(dev);  // before the optimizer takes the parameters
  // Data parallelism or federated averaging: rank 0's model goes to every rank.
  std::unique_ptr<dist::DistributedDataParallel> ddp;
  std::unique_ptr<dist::ModelAverager> averager;
  if (c.distributed) {
    if (c.sync_bn) {
      int n = dist::SyncBatchNorm(*net, comm);
      log << "synchronized batch norm: " << n << " layers" << std::endl;
    }
    if (federated) {
      averager = std::make_unique<dist::ModelAverager>(*net, comm, c.grad_bits, c.error_feedback);
    } else {
      ddp = std::make_unique<dist::DistributedDataParallel>(
          *net, comm,
          dist::DdpOptions{.bucket_bytes = c.bucket_kb << 10, .grad_bits = c.grad_bits, .error_feedback = c.error_feedback});
      log << "gradient buckets: " << ddp->stats().buckets << std::endl;
    }
  }
  // QAT's observers see each rank's own batches: their ranges are averaged
  // after every step so all ranks quantize alike.
  auto is_observer_range = [](const std::string& name) {
    return absl::EndsWith(name, ".min_val") || absl::EndsWith(name, ".max_val");
  };
  nn::SGD opt(c.quant == "qat" ? quant::ParameterGroups(*net, c.quant_lr_mult) : std::vector<nn::ParamGroup>{{net->Parameters()}},
              {.lr = c.lr, .momentum = c.momentum, .nesterov = c.nesterov, .weight_decay = c.weight_decay});
  std::unique_ptr<nn::LrSchedule> schedule;
  int64_t warmup = static_cast<int64_t>(c.warmup_epochs * steps_per_epoch);
  if (c.schedule == "cosine") {
    schedule = std::make_unique<nn::CosineWarmup>(&opt, warmup, total_steps);
  } else if (c.schedule == "step") {
    schedule = std::make_unique<nn::StepLr>(&opt, std::max<int64_t>(1, total_steps / 3), 0.1);
  } else if (c.schedule == "onecycle") {
    schedule = std::make_unique<nn::OneCycle>(&opt, c.lr, total_steps);
  } else if (c.schedule != "constant") {
    return absl::InvalidArgumentError("unknown --schedule '" + c.schedule + "' (cosine, step, onecycle, constant)");
  }

  int start_epoch = 0;
  std::string last = c.checkpoint_dir.empty() ? "" : c.checkpoint_dir + "/last.safetensors";
  if (c.resume) {
    if (last.empty()) return absl::InvalidArgumentError("--resume needs --checkpoint_dir");
    auto meta = nn::LoadCheckpoint(last, *net, &opt);
    if (!meta.ok()) return meta.status();
    start_epoch = std::stoi(meta->count("epoch") ? meta->at("epoch") : "0");
    if (schedule) schedule->SetStep(start_epoch * steps_per_epoch);
    log << "resumed from " << last << " at epoch " << start_epoch << std::endl;
    std::optional<std::vector<EpochMetrics>> history =
        ParseHistory(meta->count("history") ? meta->at("history") : std::string());
    if (history && static_cast<int>(history->size()) == start_epoch) result.history = *std::move(history);
  }
  if (rank == 0 && !c.checkpoint_dir.empty()) {
    std::error_code error;
    std::filesystem::create_directories(c.checkpoint_dir, error);
    if (error) return absl::PermissionDeniedError("--checkpoint_dir=" + c.checkpoint_dir + ": " + error.message());
  }
  std::unique_ptr<quant::ProgressiveBits> progressive;
  if (!c.progressive.empty()) {
    if (c.quant != "qat") return absl::InvalidArgumentError("--progressive needs --quant=qat");
    progressive = std::make_unique<quant::ProgressiveBits>(
        c.progressive, std::max(1, c.epochs / static_cast<int>(c.progressive.size())));
  }
  const bool tty = c.progress_bar && !c.distributed && isatty(STDOUT_FILENO) && &log == &std::cout;  // mpirun forwards a pty
  auto eval_model = [&](const Tensor& x) {
    net->Eval();
    return net->Forward(x);
  };

  // EWGS's adaptive delta (Lee et al. 2021, sec. 3.3), estimated at the start of
  // each epoch on three unaugmented training batches with the observers frozen;
  // the value each quantizer gets is logged.
  auto estimate_ewgs = [&](int epoch) {
    std::vector<data::Batch> probe;
    auto it = calib_loader.Start(epoch);
    for (data::Batch b; probe.size() < 3 && it->Next(&b);) probe.push_back(b);
    if (probe.empty()) return;
    net->Train();
    // The probes run in training mode (the Hessian of the loss being trained);
    // batch norm's running statistics are put back afterwards.
    std::vector<std::pair<Tensor*, Tensor>> saved;
    for (auto& [name, m] : net->NamedModules()) {
      if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(m)) {
        for (Tensor* t : {&bn->running_mean, &bn->running_var, &bn->num_batches_tracked}) saved.emplace_back(t, t->Clone());
      }
    }
    if (!report.rows.front().input->ready()) net->Forward(probe[0].data);  // the observers see data first
    quant::FreezeObservers(report, true);
    std::vector<double> delta = quant::EstimateEwgsDelta(
        report, *net, [&](int i) { return CrossEntropy(net->Forward(probe[i].data), probe[i].labels); },
        static_cast<int>(probe.size()));
    quant::FreezeObservers(report, false);
    {
      NoGradGuard no_grad;
      for (auto& [t, v] : saved) t->CopyFrom(v);
    }
    result.ewgs_deltas.clear();
    std::vector<std::string> parts;
    size_t k = 0;
    std::vector<const quant::Quantizer*> seen;
    for (const auto& r : report.rows) {
      for (auto [q, which] : {std::pair{r.weight.get(), "weight"}, std::pair{r.input.get(), "input"}}) {
        auto* fq = dynamic_cast<quant::FakeQuant*>(q);
        if (fq == nullptr || fq->gradient() != FakeQuantGradient::kEwgs ||
            std::find(seen.begin(), seen.end(), q) != seen.end() || k >= delta.size()) {
          continue;
        }
        seen.push_back(q);
        std::string name = absl::StrCat(r.name, ".", which);
        result.ewgs_deltas.emplace_back(name, delta[k]);
        parts.push_back(absl::StrFormat("%s %.3g", name, delta[k++]));
      }
    }
    log << "epoch " << epoch + 1 << ": EWGS delta (in steps) " << absl::StrJoin(parts, ", ") << std::endl;
  };

  // Whether the last evaluation scored the model as it now is (no second pass
  // over the test set for the summary's f32 row).
  bool scored_as_is = false;
  for (int epoch = start_epoch; epoch < c.epochs; ++epoch) {
    if (progressive) progressive->Apply(report, epoch);
    if (auto_ewgs) estimate_ewgs(epoch);
    net->Train();
    auto start = Clock::now();
    auto it = train_loader.Start(epoch);
    data::Batch b;
    double loss_sum = 0;
    int64_t right = 0, seen = 0, step = 0;
    while (step < steps_per_epoch && it->Next(&b)) {
      opt.ZeroGrad();
      Tensor logits;
      if (c.amp == "bf16") {
        AutocastGuard amp(DType::kBF16);
        logits = net->Forward(b.data).To(DType::kF32);
      } else {
        logits = net->Forward(b.data);
      }
      Tensor loss = CrossEntropy(logits, b.labels);
      if (teacher) {
        Tensor teacher_logits;
        {
          NoGradGuard no_grad;
          teacher_logits = teacher->Forward(b.data);
        }
        loss = Add(Mul(loss, 1 - c.distill_weight),
                   Mul(DistillationLoss(logits, teacher_logits, c.distill_temperature), c.distill_weight));
      }
      if (ddp) {
        ddp->Backward(loss);
      } else {
        Backward(loss);
      }
      opt.Step();
      if (schedule) schedule->Step();
      ++step;
      float l = loss.item<float>();
      if (ranks > 1) {
        if (c.quant == "qat") {
          dist::SyncBuffers(*net, *comm, is_observer_range);
          // Lazy starts (LSQ's steps from the first batch) ran on each rank's
          // own data: rank 0's quantizer state wins once, after the first step.
          if (epoch == start_epoch && step == 1 && !averager) dist::BroadcastState(*net, *comm);
        }
        if (averager && step % c.local_steps == 0) averager->Average();
        Tensor mean_loss = Tensor::FromVector<float>({l}, {1});
        comm->AllReduce(mean_loss, dist::ReduceOp::kMean);
        l = mean_loss.item<float>();
      }
      if (!std::isfinite(l)) {
        return absl::InternalError(absl::StrCat("epoch ", epoch + 1, " step ", step,
                                                ": the loss is not finite; lower --lr"));
      }
      loss_sum += l * b.labels.numel();
      std::vector<int64_t> pred = Argmax(logits.Detach(), 1).ToVector<int64_t>(), lab = b.labels.ToVector<int64_t>();
      for (size_t i = 0; i < pred.size(); ++i) right += pred[i] == lab[i];
      seen += static_cast<int64_t>(pred.size());
      double elapsed = Since(start), ips = seen / std::max(elapsed, 1e-9);
      double eta = (steps_per_epoch - step) * elapsed / step + (c.epochs - epoch - 1) * elapsed / step * steps_per_epoch;
      std::string line = absl::StrFormat("epoch %d/%d step %d/%d loss %.4f acc %.2f%% %.0f img/s ETA %s", epoch + 1,
                                         c.epochs, step, steps_per_epoch, loss_sum / seen, 100.0 * right / seen, ips,
                                         Duration(eta));
      if (tty) {
        int width = 24, filled = static_cast<int>(width * step / std::max<int64_t>(1, steps_per_epoch));
        std::printf("\r[%s%s] %s\033[K", std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                    line.c_str());
        std::fflush(stdout);
      } else if (step % std::max<int64_t>(1, steps_per_epoch / 5) == 0) {
        log << line << std::endl;  // each line reaches a file (a cluster job's log) when it happens
      }
    }
    if (tty) std::printf("\n");
    if (averager && step % c.local_steps != 0) averager->Average();  // the epoch ends on the averaged model
    if (ranks > 1) {
      std::vector<double> v = {static_cast<double>(right), static_cast<double>(seen)};
      reduce(v, dist::ReduceOp::kSum);
      loss_sum = loss_sum / std::max<int64_t>(seen, 1) * v[1];  // already the mean over ranks
      right = static_cast<int64_t>(v[0]);
      seen = static_cast<int64_t>(v[1]);
    }
    double seconds = Since(start);
    if (ddp) dist::BroadcastState(*net, *comm);  // rank 0's batch norm statistics (Note [Distributed evaluation])
    double test_acc = Score(test_loader, eval_model, nullptr, {}, reduce).a;
    scored_as_is = true;
    EpochMetrics m{epoch + 1, loss_sum / std::max<int64_t>(seen, 1), static_cast<double>(right) / std::max<int64_t>(seen, 1),
                   test_acc, opt.lr(), seen / std::max(seconds, 1e-9), seconds};
    result.history.push_back(m);
    log << absl::StrFormat("epoch %d: train loss %.4f acc %.2f%% | test acc %.2f%% | lr %.4g | %.0f img/s | %.1f s",
                           m.epoch, m.train_loss, 100 * m.train_accuracy, 100 * m.test_accuracy, m.lr,
                           m.images_per_second, m.seconds)
        << std::endl;
    if (rank == 0 && !c.metrics_file.empty()) {
      std::ofstream f(c.metrics_file, std::ios::app);
      f << absl::StrFormat(
          "{\"epoch\": %d, \"train_loss\": %.6f, \"train_accuracy\": %.6f, \"test_accuracy\": %.6f, \"lr\": %.6g, "
          "\"images_per_second\": %.1f, \"seconds\": %.2f, \"model\": \"%s\", \"quant\": \"%s\"}\n",
          m.epoch, m.train_loss, m.train_accuracy, m.test_accuracy, m.lr, m.images_per_second, m.seconds, c.model,
          c.quant);
      if (!f) return absl::InternalError("cannot append to --metrics_file " + c.metrics_file);
    }
    if (rank == 0 && !last.empty()) {
      absl::Status saved = nn::SaveCheckpoint(last, *net, &opt, {{"epoch", std::to_string(epoch + 1)},
                                                                  {"command", result.command},
                                                                  {"history", HistoryText(result.history)}});
      if (!saved.ok()) return saved;
    }
    if (c.stop_after_epoch == epoch + 1 && epoch + 1 < c.epochs) {
      log << "stopped after epoch " << epoch + 1 << " of " << c.epochs << " (--stop_after_epoch)" << std::endl;
      result.stopped = true;
      result.float_accuracy = m.test_accuracy;
      return result;
    }
  }

  if (ddp) {
    result.bytes_per_step = ddp->stats().bytes_sent;
    result.f32_bytes_per_step = ddp->stats().f32_bytes;
    log << absl::StrFormat("exchange: %d bytes sent per step by each rank (f32 would send %d: %.2fx less); last step "
                           "waited %.1f ms for it after backward, %d of %d buckets started during backward",
                           result.bytes_per_step, result.f32_bytes_per_step,
                           static_cast<double>(result.f32_bytes_per_step) / std::max<int64_t>(1, result.bytes_per_step),
                           1e3 * ddp->stats().wait_seconds, ddp->stats().launched_in_backward, ddp->stats().buckets)
        << std::endl;
  }
  if (averager) {
    result.bytes_per_step = averager->bytes_sent();
    result.f32_bytes_per_step = averager->f32_bytes();
    log << absl::StrFormat("federated averaging: %d bytes sent per averaging by each rank (parameters and batch-norm "
                           "statistics as f32: %d)",
                           result.bytes_per_step, result.f32_bytes_per_step)
        << std::endl;
  }
  if (c.bn_reestimate_batches > 0) {
    std::vector<Tensor> batches;
    auto it = calib_loader.Start(0);
    for (data::Batch b; static_cast<int>(batches.size()) < c.bn_reestimate_batches && it->Next(&b);) {
      batches.push_back(b.data);
    }
    int n = quant::ReestimateBatchNorm(report, *net, batches, [&](const Tensor& x) { return net->Forward(x); });
    scored_as_is = false;
    log << absl::StrFormat("batch norm re-estimated: %d layers over %d training batches (no augmentation)", n,
                           batches.size())
        << std::endl;
  }
  net->Eval();
  // PTQ: quantizers from the policy, ranges from the calibration batches.
  auto post_training = [&](const quant::MixedPrecisionPolicy& policy, const std::string& rounding) {
    scored_as_is = false;
    report = quant::PrepareQat(*net, policy);
    net->To(dev);  // the new quantizers' state
    std::vector<Tensor> batches;
    auto it = calib_loader.Start(0);
    data::Batch b;
    while (static_cast<int>(batches.size()) < c.calibration_batches && it->Next(&b)) batches.push_back(b.data);
    auto forward = [&](const Tensor& x) { return net->Forward(x); };
    quant::Calibrate(report, *net, batches, forward);
    if (rounding != "nearest") {
      auto start = Clock::now();
      bool blocks = rounding == "brecq";
      auto rows = quant::AdaRound(report, *net, batches, forward,
                                  {.iterations = c.adaround_iters, .lr = c.adaround_lr, .seed = c.seed, .blocks = blocks});
      log << absl::StrFormat("%s: %d %s, %d steps each, on %d calibration batches, %.1f s\n",
                             blocks ? "BRECQ" : "AdaRound", rows.size(), blocks ? "blocks and layers" : "layers",
                             c.adaround_iters, batches.size(), Since(start))
          << quant::AdaRoundTable(rows) << std::flush;
    }
    net->Eval();
  };
  if (c.quant == "ptq") {
    absl::StatusOr<quant::MixedPrecisionPolicy> policy = Policy(policy_config, total_steps);
    if (!policy.ok()) return policy.status();
    post_training(*policy, c.rounding);
  }
  result.float_accuracy =
      scored_as_is ? result.history.back().test_accuracy : Score(test_loader, eval_model, nullptr, {}, reduce).a;
  // What follows (folding, conversion) reads the f32 master weights.
  if (c.fp8 != "none") quant::RemoveFp8Training(*net);
  Tensor sample;
  {
    auto it = test_loader.Start(0);
    data::Batch b;
    if (it->Next(&b)) sample = b.data;
  }
  if (c.quant == "none") {
    // The f32 model's own row: folded f32 speed; then an int8 row by PTQ (min/max
    // ranges over the calibration batches), so every run's summary has both.
    net->To(Device::Cpu());  // conversion reads the weights on the host
    auto folded = quant::ConvertFloat(*net);
    net->To(dev);
    folded->MoveTo(dev);
    if (sample.defined()) {
      result.float_images_per_second = ImagesPerSecond(sample, [&](const Tensor& x) { return folded->Forward(x); });
    }
    quant::MixedPrecisionPolicy int8;
    int8.defaults.kind = quant::QuantizerKind::kMinMax;
    post_training(int8, "nearest");
  }
  if (c.report) {
    // Inputs recorded on unaugmented training batches, the model as it ships.
    std::vector<Tensor> batches;
    auto it = calib_loader.Start(0);
    data::Batch b;
    while (static_cast<int>(batches.size()) < std::min(2, c.calibration_batches) && it->Next(&b)) batches.push_back(b.data);
    quant::RecordInputs(report, *net, batches, [&](const Tensor& x) { return net->Forward(x); });
    log << "\nquantization report (inputs: " << batches.size() << " training batches, unaugmented)\n"
        << quant::QuantReport(report) << std::flush;
    if (!c.metrics_file.empty()) {
      std::string m = c.metrics_file;
      result.report_json = (absl::EndsWith(m, ".jsonl") ? m.substr(0, m.size() - 6) : m) + ".report.json";
    } else if (!c.checkpoint_dir.empty()) {
      result.report_json = c.checkpoint_dir + "/report.json";
    }
    if (rank == 0 && !result.report_json.empty()) {
      absl::Status written = WriteFileAtomically(result.report_json, quant::QuantReportJson(report));
      if (!written.ok()) return written;
      log << "report: " << result.report_json << std::endl;
    }
  }
  {
    net->To(Device::Cpu());
    auto q = quant::Convert(*net);
    net->To(dev);
    q->MoveTo(dev);
    Scores scores =
        Score(test_loader, eval_model, [&](const Tensor& x) { return q->Forward(x); }, OutputSteps(*q), reduce);
    result.integer_accuracy = scores.b;
    result.agreement = scores.same;
    result.max_logit_diff = scores.max_diff;
    result.max_logit_diff_steps = scores.max_diff_steps;
    result.integer_bytes = q->Bytes();
    if (sample.defined()) result.integer_images_per_second = ImagesPerSecond(sample, [&](const Tensor& x) { return q->Forward(x); });
    // The input shape travels with the model: //apps:export needs no flag for it.
    const std::string input_shape = absl::StrCat("1,", d.channels, ",", d.size, ",", d.size);
    if (rank == 0 && !c.checkpoint_dir.empty()) {
      absl::Status saved = q->Save(c.checkpoint_dir + "/model.int.safetensors",
                                   {{"command", result.command}, {"input_shape", input_shape}});
      if (!saved.ok()) return saved;
    }
    if (rank == 0 && !c.export_onnx.empty()) {
      q->MoveTo(Device::Cpu());
      absl::Status exported = quant::ExportOnnx(*q, c.export_onnx, {1, d.channels, d.size, d.size});
      if (!exported.ok()) return exported;
      log << "wrote " << c.export_onnx << " (" << quant::OnnxForm(*q) << ")" << std::endl;
    }
  }
  return result;
}

}  // namespace quanta::apps

// dist/ on 2 ranks of OpenMPI on this machine (run_mpi.sh starts them): the
// collectives against closed forms, the gradient codec against hand-worked
// codes, synchronized batch norm against one batch norm over the whole batch,
// and data parallelism against one process: 2 ranks x batch 64 take the same
// steps as 1 process x batch 128 on real Fashion-MNIST.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <memory>

#include "autograd/autograd.h"
#include "core/backend.h"
#include "core/ops.h"
#include "data/loader.h"
#include "data/partition.h"
#include "data/readers.h"
#include "dist/communicator.h"
#include "dist/ddp.h"
#include "gtest/gtest.h"
#include "models/registry.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/optim.h"

namespace quanta::dist {
namespace {

std::shared_ptr<Communicator> Comm() {
  static std::shared_ptr<Communicator> comm = [] {
    absl::StatusOr<std::shared_ptr<Communicator>> c = Init(Engine::kMpi);
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", std::string(c.status().message()).c_str());
      std::abort();
    }
    return *c;
  }();
  return comm;
}

std::vector<float> V(const Tensor& t) { return t.Contiguous().ToVector<float>(); }

double MaxAbsDiff(const Tensor& a, const Tensor& b) { return Max(Abs(Sub(a, b))).item<float>(); }

TEST(Collectives, AgainstClosedForms) {
  auto comm = Comm();
  ASSERT_EQ(comm->size(), 2) << "run_mpi.sh starts 2 ranks";
  ASSERT_EQ(comm->name(), "mpi");
  const int r = comm->rank();
  // Rank r holds (r + 1) * [1, 2, 3].
  auto mine = [&] { return Tensor::FromVector<float>({1.0f * (r + 1), 2.0f * (r + 1), 3.0f * (r + 1)}, {3}); };
  Tensor t = mine();
  comm->AllReduce(t, ReduceOp::kSum);
  EXPECT_EQ(V(t), (std::vector<float>{3, 6, 9}));
  t = mine();
  comm->AllReduce(t, ReduceOp::kMean);
  EXPECT_EQ(V(t), (std::vector<float>{1.5, 3, 4.5}));
  t = mine();
  comm->AllReduce(t, ReduceOp::kMax);
  EXPECT_EQ(V(t), (std::vector<float>{2, 4, 6}));
  t = mine();
  comm->AllReduce(t, ReduceOp::kMin);
  EXPECT_EQ(V(t), (std::vector<float>{1, 2, 3}));
  t = mine();
  comm->Broadcast(t, 1);
  EXPECT_EQ(V(t), (std::vector<float>{2, 4, 6}));
  Tensor g = comm->AllGather(mine().View({1, 3}));
  EXPECT_EQ(g.shape(), (Shape{2, 3}));
  EXPECT_EQ(V(g), (std::vector<float>{1, 2, 3, 2, 4, 6}));
  Tensor i = Tensor::FromVector<int64_t>({int64_t{10} * r}, {1});
  comm->AllReduce(i, ReduceOp::kSum);
  EXPECT_EQ(i.item<int64_t>(), 10);
  // The nonblocking forms.
  t = mine();
  std::unique_ptr<Work> w = comm->AllReduceAsync(t);
  w->Wait();
  EXPECT_EQ(V(t), (std::vector<float>{3, 6, 9}));
  Tensor bytes = Tensor::FromVector<uint8_t>({static_cast<uint8_t>(7 + r)}, {1});
  Tensor out = Tensor::Empty({2}, DType::kU8);
  comm->AllGatherAsync(bytes, out)->Wait();
  EXPECT_EQ(out.ToVector<uint8_t>(), (std::vector<uint8_t>{7, 8}));
  comm->Barrier();
}

TEST(Collectives, MisuseNamesTheCollective) {
  auto comm = Comm();
  Tensor strided = Zeros({4, 4}).Transpose(0, 1);
  try {
    comm->AllReduce(strided, ReduceOp::kSum);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce: f32[4, 4]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not contiguous"), std::string::npos) << e.what();
  }
  Tensor half = Zeros({2}, DType::kF16);
  EXPECT_THROW(comm->Broadcast(half, 0), Error);
  Tensor ok = Zeros({2});
  EXPECT_THROW(comm->Broadcast(ok, 2), Error);
}

// Note [Quantized exchange], worked by hand. Rank 0 sends v0 = [1, -0.5, 0.25, 0]:
// max 1, scale 1/127, codes round(127 v) = [127, -64 (-63.5, ties to even), 32
// (31.75), 0]. Rank 1 sends v1 = 2 v0 (scale 2/127, the same codes).
TEST(Codec, EightBitsByHand) {
  auto comm = Comm();
  const int r = comm->rank();
  GradientCodec codec(8, /*error_feedback=*/true);
  Tensor v = Mul(Tensor::FromVector<float>({1, -0.5f, 0.25f, 0}, {4}), r + 1.0);
  Tensor payload = codec.Encode(v);
  ASSERT_EQ(payload.numel(), 4 + 4);
  std::vector<uint8_t> p = payload.ToVector<uint8_t>();
  float scale;
  std::memcpy(&scale, p.data(), 4);
  EXPECT_EQ(scale, static_cast<float>((r + 1) / 127.0));
  EXPECT_EQ(static_cast<int8_t>(p[4]), 127);
  EXPECT_EQ(static_cast<int8_t>(p[5]), -64);
  EXPECT_EQ(static_cast<int8_t>(p[6]), 32);
  EXPECT_EQ(static_cast<int8_t>(p[7]), 0);
  // What rounding lost stays behind: v - scale * codes.
  std::vector<float> res = V(codec.residual());
  EXPECT_FLOAT_EQ(res[1], -0.5f * (r + 1) + 64 * scale);
  EXPECT_FLOAT_EQ(res[2], 0.25f * (r + 1) - 32 * scale);
  Tensor sum = codec.DecodeSum(comm->AllGather(payload), 2, 4);
  // Both ranks' decoded values: (1/127 + 2/127) * codes.
  const float s0 = static_cast<float>(1 / 127.0), s1 = static_cast<float>(2 / 127.0);
  std::vector<float> got = V(sum);
  EXPECT_FLOAT_EQ(got[0], 127 * s0 + 127 * s1);
  EXPECT_FLOAT_EQ(got[1], -64 * s0 + -64 * s1);
  EXPECT_FLOAT_EQ(got[2], 32 * s0 + 32 * s1);
  EXPECT_EQ(got[3], 0);
}

// 4 bits: codes in [-7, 7], two to a byte (qint4), 4 + ceil(n / 2) bytes; with
// error feedback the residual enters the next encoding, so repeated sends of
// the same small value add up to it on average.
TEST(Codec, FourBitsAndErrorFeedback) {
  GradientCodec with(4, true), without(4, false);
  Tensor v = Tensor::FromVector<float>({1.0f, 0.05f, -0.03f}, {3});  // 0.05 is 0.35 of a step (1/7)
  EXPECT_EQ(with.PayloadBytes(3), 4 + 2);
  double sum_with = 0, sum_without = 0;
  for (int k = 0; k < 70; ++k) {
    sum_with += V(with.DecodeSum(with.Encode(v), 1, 3))[1];
    sum_without += V(without.DecodeSum(without.Encode(v), 1, 3))[1];
  }
  EXPECT_EQ(sum_without, 0);                 // 0.35 of a step always rounds to 0
  EXPECT_NEAR(sum_with, 70 * 0.05, 1.0 / 7);  // within one step of the truth
}

// d/dx_r of sum over ranks of <c_r, y>, y = x_0 + x_1 on every rank, is c_0 + c_1.
TEST(SyncBatchNorm, AllReduceSumPassesGradientsBack) {
  auto comm = Comm();
  const int r = comm->rank();
  Tensor x = Tensor::FromVector<float>({1.0f + r, 2.0f}, {2}).SetRequiresGrad();
  Tensor y = AllReduceSumWithGradient(x, comm);
  EXPECT_EQ(V(y), (std::vector<float>{3, 4}));
  Tensor c = Tensor::FromVector<float>({r == 0 ? 1.0f : 10.0f, r == 0 ? 2.0f : 20.0f}, {2});
  Backward(Sum(Mul(y, c)));
  EXPECT_EQ(V(x.grad()), (std::vector<float>{11, 22}));
}

// Each rank normalizes its half of an (8, 3, 2, 2) batch with the statistics of
// the whole; output, running statistics and (mean over ranks) parameter
// gradients equal one BatchNorm2d over the whole batch (core's fused kernel).
TEST(SyncBatchNorm, EqualsOneBatchNormOverTheGlobalBatch) {
  auto comm = Comm();
  const int r = comm->rank();
  Generator gen(5);
  Tensor x = Add(Mul(Normal({8, 3, 2, 2}, 0, 1, &gen), 3.0), 10.0);  // an offset mean: E[x^2] - E[x]^2 would cancel
  Tensor upstream = Normal({8, 3, 2, 2}, 0, 1, &gen);
  nn::BatchNorm2d whole(3), synced(3);
  for (nn::BatchNorm2d* bn : {&whole, &synced}) {
    NoGradGuard no_grad;
    bn->weight.CopyFrom(Tensor::FromVector<float>({1.5f, -0.5f, 2.0f}, {3}));
    bn->bias.CopyFrom(Tensor::FromVector<float>({0.1f, 0.2f, 0.3f}, {3}));
  }
  Tensor xw = x.Clone().SetRequiresGrad();
  Tensor yw = whole.Forward(xw);
  Backward(Sum(Mul(yw, upstream)));
  ASSERT_EQ(SyncBatchNorm(synced, comm), 1);
  DistributedDataParallel ddp(synced, comm);
  Tensor half = x.Narrow(0, 4 * r, 4).Contiguous().SetRequiresGrad();
  Tensor ys = synced.Forward(half);
  EXPECT_LT(MaxAbsDiff(ys, yw.Narrow(0, 4 * r, 4)), 2e-5);
  EXPECT_LT(MaxAbsDiff(synced.running_mean, whole.running_mean), 1e-5);
  EXPECT_LT(MaxAbsDiff(synced.running_var, whole.running_var), 1e-4);  // unbiased over all 32 values a channel
  // Rank r's loss L_r is twice its half of the whole-batch loss, so the whole
  // loss is (L_0 + L_1) / 2: DDP's mean over ranks of the parameter gradients is
  // its gradient, and each half's input gradient is twice the whole's.
  ddp.Backward(Mul(Sum(Mul(ys, upstream.Narrow(0, 4 * r, 4))), 2.0));
  EXPECT_LT(MaxAbsDiff(synced.weight.grad(), whole.weight.grad()), 1e-4);
  EXPECT_LT(MaxAbsDiff(synced.bias.grad(), whole.bias.grad()), 1e-4);
  EXPECT_LT(MaxAbsDiff(half.grad(), Mul(xw.grad().Narrow(0, 4 * r, 4), 2.0)), 1e-4);
}

// ---- data parallelism against one process ------------------------------------

struct TrainRun {
  std::vector<double> losses;        // per step (distributed: the mean over ranks)
  std::vector<Tensor> params;
  int64_t bytes_sent = 0, f32_bytes = 0, launched_in_backward = 0;
  int buckets = 0;
};

std::shared_ptr<data::ImageDataset> FirstImages(int64_t n) {
  static std::shared_ptr<data::ImageDataset> train = [] {
    auto t = data::ReadFashionMnist(data::Split::kTrain);
    if (!t.ok()) std::abort();
    return *t;
  }();
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  return data::Subset(*train, idx);
}

// fmnist_resnet8, SGD with Nesterov momentum, `steps` steps of `batch` images
// per process: with comm, this rank's shard under DistributedDataParallel.
TrainRun Train(std::shared_ptr<Communicator> comm, int64_t batch, int steps, bool sync_bn, DdpOptions options = {},
               const std::string& model = "fmnist_resnet8", DType dtype = DType::kF32) {
  const int shards = comm ? comm->size() : 1, shard = comm ? comm->rank() : 0;
  data::DataLoader loader(FirstImages(2048), data::Compose({data::ToTensor(), data::Normalize({0.2860f}, {0.3530f})}),
                          {.batch_size = batch, .shuffle = true, .seed = 3, .drop_last = true, .workers = 0,
                           .num_shards = shards, .shard = shard});
  Generator gen(1);
  std::shared_ptr<nn::Layer> net = models::Make(model, 10, 1, &gen);
  net->To(dtype);
  std::unique_ptr<DistributedDataParallel> ddp;
  if (comm) {
    if (sync_bn) SyncBatchNorm(*net, comm);
    ddp = std::make_unique<DistributedDataParallel>(*net, comm, options);
  }
  nn::SGD opt({{net->Parameters()}}, {.lr = 0.05, .momentum = 0.9, .nesterov = true, .weight_decay = 5e-4});
  TrainRun run;
  auto it = loader.Start(0);
  data::Batch b;
  for (int step = 0; step < steps && it->Next(&b); ++step) {
    opt.ZeroGrad();
    Tensor loss = CrossEntropy(net->Forward(b.data.To(dtype)), b.labels);
    if (ddp) {
      ddp->Backward(loss);
    } else {
      Backward(loss);
    }
    opt.Step();
    Tensor l = loss.Detach().To(DType::kF64).Clone().View({1});
    if (comm) comm->AllReduce(l, ReduceOp::kMean);
    run.losses.push_back(l.item<double>());
  }
  for (const Tensor& p : net->Parameters()) run.params.push_back(p.Detach().Clone());
  if (ddp) {
    run.bytes_sent = ddp->stats().bytes_sent;
    run.f32_bytes = ddp->stats().f32_bytes;
    run.launched_in_backward = ddp->stats().launched_in_backward;
    run.buckets = ddp->stats().buckets;
  }
  return run;
}

// The test: 2 ranks x batch B/2 (synchronized batch norm, so each step
// normalizes over the same B images) against 1 process x batch B on the same
// Fashion-MNIST training images: the same loss every step and the same weights
// at the end, within 1e-5. In f64: in f32 the single process itself strays
// from exact arithmetic by more than that within a few steps (measured: after
// 2 steps at lr 0.05 its weights are 1.1e-4 from an f64 run's, the 2-rank run's
// 1.06e-4), so f32 checks one step and f64 checks six.
TEST(DataParallel, TwoRanksOfHalfTheBatchReproduceOneProcess) {
  auto comm = Comm();
  TrainRun one = Train(nullptr, 32, 6, false, {}, "fmnist_resnet8_half", DType::kF64);
  TrainRun two = Train(comm, 16, 6, true, {.bucket_bytes = 16 << 10}, "fmnist_resnet8_half", DType::kF64);
  ASSERT_EQ(one.losses.size(), 6u);
  ASSERT_EQ(two.losses.size(), 6u);
  for (size_t i = 0; i < one.losses.size(); ++i) {
    EXPECT_NEAR(two.losses[i], one.losses[i], 1e-5) << "step " << i + 1;
  }
  EXPECT_LT(one.losses.back(), one.losses.front());  // it trained
  double worst = 0;
  for (size_t i = 0; i < one.params.size(); ++i) worst = std::max(worst, MaxAbsDiff(two.params[i], one.params[i]));
  EXPECT_LT(worst, 1e-5);
  std::printf("f64, 6 steps: largest loss difference %.3g, largest weight difference %.3g\n",
              [&] {
                double m = 0;
                for (size_t i = 0; i < one.losses.size(); ++i) m = std::max(m, std::abs(one.losses[i] - two.losses[i]));
                return m;
              }(),
              worst);
  // The same model on both ranks, bit for bit (every rank sums the same values).
  for (Tensor& p : two.params) {
    Tensor theirs = p.Clone();
    comm->Broadcast(theirs, 0);
    EXPECT_EQ(MaxAbsDiff(theirs, p), 0);
  }
  // The exchange overlapped backward: all buckets but the last were started
  // from the hooks, before backward ended (the last finishes with the first layer).
  EXPECT_GT(two.buckets, 2);
  EXPECT_GE(two.launched_in_backward, two.buckets - 1);
  EXPECT_EQ(two.bytes_sent, two.f32_bytes);
}

// The same in f32, one step at batch 128 (2 ranks x 64): f32 rounds, and the
// two runs round differently (each rank sums its half of the batch; Winograd
// convolutions, Note [Winograd convolutions] in backends/cpu/onednn.cc, add
// and subtract before their products), so the weights are compared with the
// same step in f64: the 2 ranks' step is at most twice as far from it as the
// single process's own f32 step (measured on Zen 4, 1 thread: 1.4e-6 against
// 2.4e-6, 1.8e-6 between the two).
TEST(DataParallel, OneStepInFloat32) {
  auto comm = Comm();
  TrainRun exact = Train(nullptr, 128, 1, false, {}, "fmnist_resnet8_half", DType::kF64);
  TrainRun one = Train(nullptr, 128, 1, false, {}, "fmnist_resnet8_half");
  TrainRun two = Train(comm, 64, 1, true, {}, "fmnist_resnet8_half");
  double own = 0, ddp = 0, between = 0;
  for (size_t i = 0; i < one.params.size(); ++i) {
    own = std::max(own, MaxAbsDiff(one.params[i].To(DType::kF64), exact.params[i]));
    ddp = std::max(ddp, MaxAbsDiff(two.params[i].To(DType::kF64), exact.params[i]));
    between = std::max(between, MaxAbsDiff(two.params[i], one.params[i]));
  }
  std::printf("f32, 1 step: 1 process %.3g from f64, 2 ranks %.3g, between them %.3g\n", own, ddp, between);
  EXPECT_GT(own, 0);  // f32 does round: the bound below is not 0 <= 0
  EXPECT_LT(ddp, 2 * own);
  EXPECT_LT(between, 1e-5);
  EXPECT_NEAR(two.losses[0], one.losses[0], 1e-6);
}

// Without synchronized batch norm each rank normalizes its own 64 images: the
// losses differ from the single process's (the test above is not vacuous).
TEST(DataParallel, LocalBatchNormIsNotTheGlobalBatch) {
  auto comm = Comm();
  TrainRun one = Train(nullptr, 128, 2, false);
  TrainRun two = Train(comm, 64, 2, false);
  EXPECT_GT(std::abs(two.losses[1] - one.losses[1]), 1e-4);
}

// 8-bit exchange: 4 + n bytes a bucket instead of 4 n, and the steps stay close
// to the f32 exchange's over a few steps.
TEST(DataParallel, QuantizedExchangeSendsFewerBytes) {
  auto comm = Comm();
  TrainRun f32 = Train(comm, 64, 4, true);
  TrainRun q8 = Train(comm, 64, 4, true, {.grad_bits = 8});
  TrainRun q4 = Train(comm, 64, 4, true, {.grad_bits = 4});
  EXPECT_EQ(q8.bytes_sent, q8.f32_bytes / 4 + 4 * q8.buckets);
  EXPECT_LE(q4.bytes_sent, q4.f32_bytes / 8 + 5 * q4.buckets);
  for (size_t i = 0; i < f32.losses.size(); ++i) EXPECT_NEAR(q8.losses[i], f32.losses[i], 0.02) << "step " << i + 1;
}

// Federated averaging: after Average() every rank holds the mean of the ranks'
// models (f32: exactly the mean; 8-bit deltas: within a step of it).
TEST(FederatedAveraging, AverageIsTheMeanOfTheModels) {
  auto comm = Comm();
  const int r = comm->rank();
  for (int bits : {32, 8}) {
    nn::Linear lin(3, 2, true);
    ModelAverager avg(lin, comm, bits);
    Tensor start = lin.weight.Clone();
    {
      NoGradGuard no_grad;
      lin.weight.CopyFrom(Add(lin.weight, static_cast<double>(r + 1)));  // rank r moved by r + 1
    }
    avg.Average();
    // The mean change is 1.5.
    EXPECT_LT(MaxAbsDiff(lin.weight, Add(start, 1.5)), bits == 32 ? 1e-6 : 2.0 / 127) << bits << " bits";
    EXPECT_EQ(avg.bytes_sent(), bits == 32 ? 4 * 8 : 4 + 8);
  }
}

TEST(Partition, DirichletSplitCoversEveryExampleOnce) {
  std::vector<int64_t> labels;
  for (int i = 0; i < 1000; ++i) labels.push_back(i % 10);
  for (double alpha : {0.1, 1.0, 1000.0}) {
    auto parts = data::DirichletSplit(labels, 10, 4, alpha, 7);
    std::vector<int> seen(1000, 0);
    for (const auto& p : parts) {
      for (int64_t i : p) ++seen[i];
    }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 1000) << alpha;
    // Share of the largest class in each client: near 1/10 when IID (alpha
    // 1000), far above it when alpha is small.
    double top = 0;
    for (const auto& p : parts) {
      std::vector<int> c(10, 0);
      for (int64_t i : p) ++c[labels[i]];
      top += p.empty() ? 0 : static_cast<double>(*std::max_element(c.begin(), c.end())) / p.size();
    }
    top /= parts.size();
    if (alpha == 1000.0) {
      EXPECT_LT(top, 0.15);
    }
    if (alpha == 0.1) {
      EXPECT_GT(top, 0.35);
    }
  }
  EXPECT_THROW(data::DirichletSplit(labels, 10, 0, 1.0, 0), Error);
  EXPECT_THROW(data::DirichletSplit({11}, 10, 2, 1.0, 0), Error);
}

// The NCCL engine: the same closed forms on CUDA tensors, one GPU per rank.
// Skips (saying why) in a build without CUDA or with fewer GPUs than ranks.
TEST(Nccl, CollectivesOnGpus) {
  if (!internal::NcclCompiled()) GTEST_SKIP() << "this build has no CUDA (bazel test --config=cuda)";
  absl::StatusOr<std::shared_ptr<Communicator>> nccl = internal::InitNccl(Comm());
  if (!nccl.ok()) GTEST_SKIP() << nccl.status().message();
  const int r = (*nccl)->rank();
  Device gpu = Device::Cuda(r);
  Tensor t = Tensor::FromVector<float>({1.0f * (r + 1), 2.0f * (r + 1)}, {2}).To(gpu);
  (*nccl)->AllReduce(t, ReduceOp::kSum);
  EXPECT_EQ(V(t.To(Device::Cpu())), (std::vector<float>{3, 6}));
  t = Tensor::FromVector<float>({1.0f * (r + 1), 2.0f * (r + 1)}, {2}).To(gpu);
  (*nccl)->AllReduce(t, ReduceOp::kMean);
  EXPECT_EQ(V(t.To(Device::Cpu())), (std::vector<float>{1.5, 3}));
  t = Tensor::FromVector<float>({1.0f * (r + 1)}, {1}).To(gpu);
  (*nccl)->Broadcast(t, 1);
  EXPECT_EQ(V(t.To(Device::Cpu())), (std::vector<float>{2}));
  Tensor g = (*nccl)->AllGather(Tensor::FromVector<float>({1.0f * r}, {1}).To(gpu));
  EXPECT_EQ(V(g.To(Device::Cpu())), (std::vector<float>{0, 1}));
}

}  // namespace
}  // namespace quanta::dist

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  quanta::dist::Comm();
  int rc = RUN_ALL_TESTS();
  // Every rank's result: a failure on either fails the job (mpirun's exit code).
  return rc;
}

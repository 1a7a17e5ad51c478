// //apps:train and //apps:train_cifar100: train a model on an image data set in
// f32, with QAT or with PTQ, checkpoint every epoch, resume, log metrics, and end
// with a summary table (accuracy of the trained and of the converted integer
// model, bytes, images/s). The two targets differ only in the default --dataset
// (train: fashion_mnist, the data set setup installs; train_cifar100: cifar100).
//
//   bazel run //apps:train_cifar100 -- --model=resnet20 --epochs=200 --quant=qat --wbits=4 --abits=4 --quantizer=lsq
//   bazel run //apps:train -- --dataset=fashion_mnist --model=fmnist_resnet8 --epochs=10
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "apps/trainer.h"
#include "core/error.h"
#include "dist/communicator.h"

#ifndef QUANTA_DEFAULT_DATASET
#define QUANTA_DEFAULT_DATASET "cifar100"
#endif

ABSL_FLAG(std::string, dataset, QUANTA_DEFAULT_DATASET, "cifar100 | cifar10 | fashion_mnist | imagefolder");
ABSL_FLAG(std::string, data_dir, "", "where the data set is (default: ~/.cache/quanta/data for CIFAR, Debian's folder for Fashion-MNIST)");
ABSL_FLAG(int64_t, image_size, 32, "imagefolder: resize images to this");
ABSL_FLAG(std::string, model, "", "model name (default: resnet20, or fmnist_resnet8 for fashion_mnist)");
ABSL_FLAG(int, epochs, 30, "epochs");
ABSL_FLAG(int64_t, batch, 128, "batch size");
ABSL_FLAG(double, lr, 0.1, "base learning rate (SGD with momentum 0.9)");
ABSL_FLAG(double, weight_decay, 5e-4, "L2 weight decay");
ABSL_FLAG(bool, nesterov, false, "Nesterov momentum");
ABSL_FLAG(std::string, schedule, "cosine", "cosine (with warmup) | step | onecycle | constant");
ABSL_FLAG(double, warmup_epochs, 1, "cosine warmup length");
ABSL_FLAG(bool, augment, true, "random crop and horizontal flip");
ABSL_FLAG(uint64_t, seed, 0, "seed (initialization, shuffling, augmentation)");
ABSL_FLAG(int, threads, 0, "compute threads (0: $OMP_NUM_THREADS if set, else one per core)");
ABSL_FLAG(int, workers, 2, "data loader threads");
ABSL_FLAG(bool, channels_last, true,
          "on the CPU, feed channels-last batches so the network runs channels-last (oneDNN's NHWC convolutions, "
          "faster); false: NCHW. Results agree up to rounding (the convolutions sum in another order)");
ABSL_FLAG(std::string, quant, "none", "none | ptq | qat");
ABSL_FLAG(int, wbits, 8, "weight bits (2..8)");
ABSL_FLAG(int, abits, 8, "activation bits (2..8)");
ABSL_FLAG(std::string, wformat, "",
          "weights in a block format instead of --wbits: mxfp8 | mxfp8_e5m2 | mxfp6 | mxfp6_e3m2 | mxfp4 | nvfp4 "
          "(scales from each block's max; trains with the STE; docs/microscaling.md)");
ABSL_FLAG(std::string, aformat, "", "activations in a block format instead of --abits (as --wformat)");
ABSL_FLAG(std::string, quantizer, "ema", "ema | minmax | ewgs | lsq | percentile | mse | apot (APoT weights at 2-5 bits, LSQ activations)");
ABSL_FLAG(double, ema_decay, 0.999, "EMA observers' decay for activation ranges (about 1 / (1 - decay) steps of memory)");
ABSL_FLAG(std::string, lsq_init, "mse", "LSQ steps (lsq, and apot's activations) start by the MSE observer's search on the first batch, or as the paper says (2 mean|x| / sqrt(Qp); min/max for affine): mse | paper");
ABSL_FLAG(double, quant_lr_mult, 0.1, "QAT: the learning rate of the quantizers' own parameters (LSQ steps and offsets, APoT thresholds), as a multiple of --lr");
ABSL_FLAG(std::string, ewgs_delta, "auto", "EWGS: auto (Hessian estimate at each epoch, logged) or a value in steps");
ABSL_FLAG(bool, first_last_8bit, true, "keep the first and last layers at 8 bits");
ABSL_FLAG(std::string, policy, "", "a mixed-precision policy file (per-layer bits; overrides --wbits/--abits)");
ABSL_FLAG(double, bit_search, 0, "with --quant and --init_from: choose each layer's weight bits for this average "
          "(e.g. 3.0) from the loss increase when that layer alone is quantized; writes the policy to --bit_policy_out");
ABSL_FLAG(std::string, bit_candidates, "2,3,4,8", "--bit_search: the weight bits a layer may get");
ABSL_FLAG(std::string, bit_policy_out, "", "--bit_search: where the policy goes (default: --checkpoint_dir/policy.txt)");
ABSL_FLAG(std::string, progressive, "", "progressive bits, e.g. 8,6,4 (with --quant=qat)");
ABSL_FLAG(std::string, amp, "", "bf16: autocast matmul and convolution");
ABSL_FLAG(std::string, device, "cpu", "cpu, or cuda / cuda:N (a build with --config=cuda and a GPU)");
ABSL_FLAG(std::string, checkpoint_dir, "", "write last.safetensors every epoch (and the integer model at the end)");
ABSL_FLAG(std::string, export_onnx, "", "write the converted integer model to this ONNX file (QDQ, checked; block formats at opset 21)");
ABSL_FLAG(bool, report, false, "print the per-layer quantization report (range, clip %, SQNR) and write it as JSON next to --metrics");
ABSL_FLAG(bool, distributed, false, "train on every rank the launcher started (mpirun -np N ..., srun ...; MPI, "
          "or NCCL with --device=cuda): --batch per rank, rank 0 logs and writes");
ABSL_FLAG(bool, sync_bn, false, "--distributed: batch norm statistics over the global batch");
ABSL_FLAG(int, grad_bits, 32, "--distributed: gradients (or federated model changes) exchanged as 32-bit floats, or "
          "quantized to 8 or 4 bits with one scale per bucket");
ABSL_FLAG(bool, error_feedback, true, "--grad_bits=8|4: carry what rounding lost to the next exchange");
ABSL_FLAG(int64_t, bucket_kb, 1024, "--distributed: gradient bucket size in KiB (an exchange starts when its bucket is "
          "complete; a quantized bucket has one scale)");
ABSL_FLAG(int, local_steps, 0, "--distributed: federated averaging, the models averaged every K local steps (0: "
          "gradients averaged every step)");
ABSL_FLAG(double, dirichlet_alpha, 0, "--local_steps: split the training set among the ranks by a Dirichlet over "
          "labels (non-IID clients; smaller is more skewed); 0: IID shards");
ABSL_FLAG(bool, resume, false, "continue from --checkpoint_dir/last.safetensors");
ABSL_FLAG(int, stop_after_epoch, 0,
          "end after this epoch of the --epochs schedule (checkpoint written, no final evaluation); the rest runs "
          "later with --resume and the same flags, as if never stopped");
ABSL_FLAG(std::string, init_from, "", "start from this checkpoint's model (e.g. QAT from a trained f32 model)");
ABSL_FLAG(std::string, distill, "", "QAT: distill from this checkpoint (same model, e.g. the f32 run's last.safetensors)");
ABSL_FLAG(double, distill_weight, 0.5, "--distill: loss = (1 - w) cross-entropy + w T^2 KL(teacher || student)");
ABSL_FLAG(double, distill_temperature, 2.0, "--distill: softmax temperature T");
ABSL_FLAG(int, bn_reestimate, 0, "QAT: re-estimate batch norm statistics on N training batches before conversion");
ABSL_FLAG(std::string, fp8, "none",
          "none | deepseek: train with FP8 (E4M3) GEMM inputs, activations and gradients in 1x128 tiles, weights in "
          "128x128 blocks, f32 master weights (DeepSeek-V3's recipe, emulated; quant/fp8.h); the first and last "
          "layers stay f32");
ABSL_FLAG(std::string, fp8_gradient, "e4m3", "--fp8: the output gradients' format, e4m3 (DeepSeek-V3), e5m2, or f32 (FP8 forward GEMMs only, an ablation)");
ABSL_FLAG(std::string, rounding, "nearest", "PTQ: nearest | adaround (learned up/down rounding, layer by layer) | brecq (AdaRound over whole residual blocks)");
ABSL_FLAG(int, adaround_iters, 2000, "--rounding=adaround|brecq: Adam steps per layer or block");
ABSL_FLAG(double, adaround_lr, 1e-3, "--rounding=adaround|brecq: Adam's learning rate on the rounding variables");
ABSL_FLAG(std::string, metrics, "", "append one JSON line per epoch to this file");
ABSL_FLAG(int64_t, train_subset, 0, "use the first N training images (0: all)");
ABSL_FLAG(int64_t, test_subset, 0, "use the first N test images (0: all)");

int main(int argc, char** argv) {
  using namespace quanta;
  absl::SetProgramUsageMessage("trains an image classifier; --help lists the flags");
  absl::ParseCommandLine(argc, argv);
  apps::TrainConfig c;
  c.dataset = absl::GetFlag(FLAGS_dataset);
  c.data_dir = absl::GetFlag(FLAGS_data_dir);
  c.image_size = absl::GetFlag(FLAGS_image_size);
  c.model = absl::GetFlag(FLAGS_model);
  if (c.model.empty()) c.model = c.dataset == "fashion_mnist" ? "fmnist_resnet8" : "resnet20";
  c.epochs = absl::GetFlag(FLAGS_epochs);
  c.batch = absl::GetFlag(FLAGS_batch);
  c.lr = absl::GetFlag(FLAGS_lr);
  c.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  c.nesterov = absl::GetFlag(FLAGS_nesterov);
  c.schedule = absl::GetFlag(FLAGS_schedule);
  c.warmup_epochs = absl::GetFlag(FLAGS_warmup_epochs);
  c.augment = absl::GetFlag(FLAGS_augment);
  c.seed = absl::GetFlag(FLAGS_seed);
  c.threads = absl::GetFlag(FLAGS_threads);
  c.workers = absl::GetFlag(FLAGS_workers);
  c.channels_last = absl::GetFlag(FLAGS_channels_last);
  c.quant = absl::GetFlag(FLAGS_quant);
  c.wbits = absl::GetFlag(FLAGS_wbits);
  c.abits = absl::GetFlag(FLAGS_abits);
  c.wformat = absl::GetFlag(FLAGS_wformat);
  c.aformat = absl::GetFlag(FLAGS_aformat);
  c.quantizer = absl::GetFlag(FLAGS_quantizer);
  c.first_last_8bit = absl::GetFlag(FLAGS_first_last_8bit);
  c.ema_decay = absl::GetFlag(FLAGS_ema_decay);
  c.ewgs_delta = absl::GetFlag(FLAGS_ewgs_delta);
  c.lsq_init = absl::GetFlag(FLAGS_lsq_init);
  c.quant_lr_mult = absl::GetFlag(FLAGS_quant_lr_mult);
  c.policy_file = absl::GetFlag(FLAGS_policy);
  c.bit_search = absl::GetFlag(FLAGS_bit_search);
  c.bit_policy_out = absl::GetFlag(FLAGS_bit_policy_out);
  // A comma-separated list of bit widths in 2..8, or an error naming the flag.
  auto bit_list = [](const char* flag, const std::string& value, const char* example, std::vector<int>* out) {
    out->clear();
    for (const std::string& part : std::vector<std::string>(absl::StrSplit(value, ',', absl::SkipEmpty()))) {
      int bits;
      if (!absl::SimpleAtoi(part, &bits) || bits < 2 || bits > 8) {
        std::fprintf(stderr, "error: --%s=%s: bit widths in 2..8, e.g. %s\n", flag, value.c_str(), example);
        return false;
      }
      out->push_back(bits);
    }
    return true;
  };
  if (!bit_list("bit_candidates", absl::GetFlag(FLAGS_bit_candidates), "2,3,4,8", &c.bit_candidates) ||
      !bit_list("progressive", absl::GetFlag(FLAGS_progressive), "8,6,4", &c.progressive)) {
    return 2;
  }
  c.amp = absl::GetFlag(FLAGS_amp);
  c.device = absl::GetFlag(FLAGS_device);
  c.checkpoint_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  c.resume = absl::GetFlag(FLAGS_resume);
  c.stop_after_epoch = absl::GetFlag(FLAGS_stop_after_epoch);
  c.export_onnx = absl::GetFlag(FLAGS_export_onnx);
  c.report = absl::GetFlag(FLAGS_report);
  c.init_from = absl::GetFlag(FLAGS_init_from);
  c.distill = absl::GetFlag(FLAGS_distill);
  c.distill_weight = absl::GetFlag(FLAGS_distill_weight);
  c.distill_temperature = absl::GetFlag(FLAGS_distill_temperature);
  c.bn_reestimate_batches = absl::GetFlag(FLAGS_bn_reestimate);
  c.fp8 = absl::GetFlag(FLAGS_fp8);
  c.fp8_gradient = absl::GetFlag(FLAGS_fp8_gradient);
  c.rounding = absl::GetFlag(FLAGS_rounding);
  c.adaround_iters = absl::GetFlag(FLAGS_adaround_iters);
  c.adaround_lr = absl::GetFlag(FLAGS_adaround_lr);
  c.metrics_file = absl::GetFlag(FLAGS_metrics);
  c.train_subset = absl::GetFlag(FLAGS_train_subset);
  c.test_subset = absl::GetFlag(FLAGS_test_subset);
  c.distributed = absl::GetFlag(FLAGS_distributed);
  c.sync_bn = absl::GetFlag(FLAGS_sync_bn);
  c.grad_bits = absl::GetFlag(FLAGS_grad_bits);
  c.error_feedback = absl::GetFlag(FLAGS_error_feedback);
  c.bucket_kb = absl::GetFlag(FLAGS_bucket_kb);
  c.local_steps = absl::GetFlag(FLAGS_local_steps);
  c.dirichlet_alpha = absl::GetFlag(FLAGS_dirichlet_alpha);

  absl::StatusOr<apps::TrainResult> r;
  try {
    r = apps::RunTraining(c, std::cout);
  } catch (const Error& e) {
    r = absl::InternalError(e.what());
  }
  if (!r.ok()) {
    std::string message = "error: " + std::string(r.status().message());
    // Distributed: name the rank, and end every rank (the others would wait in
    // their next collective for this one forever).
    if (c.distributed && dist::LaunchedByMpi()) {
      absl::StatusOr<std::shared_ptr<dist::Communicator>> comm = dist::Init();
      if (comm.ok()) (*comm)->Abort(message);
    }
    std::fprintf(stderr, "%s\n", message.c_str());
    return 1;
  }
  if (c.distributed) {
    absl::StatusOr<std::shared_ptr<dist::Communicator>> comm = dist::Init();
    if (comm.ok() && (*comm)->rank() != 0) return 0;  // rank 0 prints the summary
  }
  if (r->stopped) {
    std::printf("stopped after epoch %d of %d (--stop_after_epoch): rerun with --resume to finish\n",
                c.stop_after_epoch, c.epochs);
    return 0;
  }
  const bool f32_run = c.quant == "none";
  std::printf("\n%-30s %10s %14s %12s\n", "model", "top-1", "bytes", "images/s");
  std::string f32_speed = f32_run ? absl::StrFormat("%.0f", r->float_images_per_second) : "-";  // fake quant is not deployed
  std::printf("%-30s %9.2f%% %14lld %12s\n", (c.model + (f32_run ? " f32 (folded)" : " fake-quant")).c_str(),
              100 * r->float_accuracy, static_cast<long long>(r->float_bytes), f32_speed.c_str());
  std::printf("%-30s %9.2f%% %14lld %12.0f\n",
              (c.model + (f32_run ? " int8 (PTQ min/max)" : " integer (converted)")).c_str(), 100 * r->integer_accuracy,
              static_cast<long long>(r->integer_bytes), r->integer_images_per_second);
  std::printf("same top-1 as the %s model on %.2f%% of the test set; largest logit difference %.4g (%.2f output steps)\n",
              f32_run ? "PTQ fake-quant" : "trained", 100 * r->agreement, r->max_logit_diff, r->max_logit_diff_steps);
  if (!f32_run) std::printf("activation EMA decay %g\n", c.ema_decay);
  if (r->ranks > 1) {
    std::printf("%d ranks; %lld bytes sent per %s by each rank (f32: %lld)\n", r->ranks,
                static_cast<long long>(r->bytes_per_step), c.local_steps > 0 ? "averaging" : "step",
                static_cast<long long>(r->f32_bytes_per_step));
  }
  for (const auto& [name, delta] : r->ewgs_deltas) std::printf("EWGS delta %s %.4g\n", name.c_str(), delta);
  std::printf("rerun: %s\n", r->command.c_str());
  return 0;
}

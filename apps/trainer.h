// The training run behind //apps:train, //apps:train_cifar100 and
// //apps:reproduce_tables: data, model, optional QAT or PTQ, the loop with
// checkpoints and metrics, evaluation of the fake-quant and converted models.
// Outside data (files, flags) gives absl::Status; nothing here exits.
//
//   TrainConfig c;
//   c.dataset = "fashion_mnist"; c.model = "fmnist_resnet8"; c.epochs = 10;
//   c.quant = "qat"; c.wbits = c.abits = 4; c.quantizer = "lsq";
//   absl::StatusOr<TrainResult> r = RunTraining(c, std::cout);
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace quanta::apps {

struct TrainConfig {
  std::string dataset = "cifar100";  // cifar100 | cifar10 | fashion_mnist | imagefolder
  std::string data_dir;              // "" : the dataset's default
  int64_t image_size = 32;           // imagefolder: images are resized to this
  std::string model = "resnet20";
  int epochs = 30;
  int64_t batch = 128;
  double lr = 0.1, momentum = 0.9, weight_decay = 5e-4;
  bool nesterov = false;
  std::string schedule = "cosine";  // cosine | step | onecycle | constant
  double warmup_epochs = 1;
  bool augment = true;
  uint64_t seed = 0;
  int threads = 0, workers = 2;  // threads 0: OpenMP's default ($OMP_NUM_THREADS, else one per core)
  std::string quant = "none";  // none | ptq | qat
  int wbits = 8, abits = 8;
  // Block formats instead of bits (quant::BlockFormatFromName: mxfp8, mxfp6,
  // mxfp4, nvfp4, ...); empty: integer bits.
  std::string wformat, aformat;
  std::string quantizer = "ema";  // ema | minmax | ewgs | lsq | percentile | mse | apot
  // EMA observers' decay for activations: ranges average over about
  // 1 / (1 - decay) steps (the design's 0.999; a run of a few hundred steps wants 0.99).
  double ema_decay = 0.999;
  std::string lsq_init = "mse";  // mse | paper: how LSQ steps start (quant::LsqInit)
  // QAT: the learning rate of the quantizers' own parameters (LSQ steps and
  // offsets, APoT thresholds) as a multiple of lr (quant::ParameterGroups).
  double quant_lr_mult = 0.1;
  std::string ewgs_delta = "auto";  // EWGS: "auto" (estimated from the Hessian each epoch) or a value
  bool first_last_8bit = true;
  std::string policy_file;        // overrides wbits/abits/quantizer
  // Automatic mixed precision (quant/bit_search.h), with --quant and a trained
  // model (init_from): per-layer weight bits for this average over the searched
  // layers, chosen from bit_candidates, written to bit_policy_out (default
  // checkpoint_dir/policy.txt) and used as this run's policy. 0: off.
  double bit_search = 0;
  std::vector<int> bit_candidates = {2, 3, 4, 8};
  std::string bit_policy_out;
  std::vector<int> progressive;   // e.g. {8, 6, 4}: bits step down over the epochs
  std::string amp;                // "" | bf16
  std::string device = "cpu";     // cpu | cuda | cuda:N
  bool channels_last = true;      // on the CPU, batches (and so the network) channels-last
  std::string checkpoint_dir;     // "" : no checkpoints
  std::string export_onnx;        // "" : no ONNX file; else the converted model, QDQ, batch symbolic
  bool resume = false;
  // End the run after this epoch of the --epochs schedule (checkpoint written,
  // no final evaluation or conversion): the rest runs later with --resume, as
  // if never stopped. 0: run to the end. Not part of CommandLine.
  int stop_after_epoch = 0;
  std::string init_from;          // a checkpoint (model part) to start from
  // Knowledge distillation, QAT only (an error otherwise): a checkpoint of the
  // same architecture, run in eval mode as the teacher; the loss becomes
  // (1 - w) CE + w T^2 KL(teacher || student) at temperature T.
  std::string distill;
  double distill_weight = 0.5, distill_temperature = 2.0;
  // QAT: batch norm's running statistics re-estimated on this many unaugmented
  // training batches before evaluation and conversion (0: as training left them).
  int bn_reestimate_batches = 0;
  // FP8 training (quant/fp8.h): none | deepseek (E4M3 GEMM inputs in 1x128 tiles
  // and 128x128 blocks, emulated), with E4M3 or E5M2 output gradients.
  std::string fp8 = "none";
  std::string fp8_gradient = "e4m3";
  // PTQ: how weights round onto the calibrated grid: "nearest", "adaround"
  // (quant::AdaRound: learned per weight, layer by layer, adaround_iters Adam
  // steps each, on the calibration batches) or "brecq" (the same over whole
  // residual blocks, Note [BRECQ blocks] in quant/adaround.h).
  std::string rounding = "nearest";
  int adaround_iters = 2000;
  double adaround_lr = 1e-3;  // Adam's rate on the rounding variables
  std::string metrics_file;       // JSON lines, one per epoch, appended
  int64_t train_subset = 0, test_subset = 0;  // the first N examples (0: all)
  int calibration_batches = 8;    // PTQ, and the int8 row of an f32 run's summary
  bool progress_bar = true;       // on a terminal; plain lines otherwise
  // The per-layer quantization report (quant::QuantReport) after QAT or
  // calibration (an f32 run: of its W8A8 PTQ row), logged, and as JSON next to
  // the metrics (X.jsonl -> X.report.json) or in checkpoint_dir/report.json.
  bool report = false;
  // Training past one process (dist/): with distributed, every rank runs this
  // with the same config (mpirun -np N, srun); batch is per rank, so the global
  // batch is N * batch. Rank 0 alone logs and writes checkpoints, metrics and
  // files; one rank's error ends the job (dist::Communicator::Abort).
  bool distributed = false;
  bool sync_bn = false;           // batch norm over the global batch (else each rank's own)
  int grad_bits = 32;             // 32, or 8 / 4: quantized exchange (Note [Quantized exchange])
  bool error_feedback = true;     // with grad_bits 8 / 4
  int64_t bucket_kb = 1024;       // gradient bucket size (each quantized bucket has its own scale)
  // Federated averaging / local SGD: each rank trains alone for local_steps
  // steps, then the models are averaged (their changes exchanged at grad_bits).
  // 0: data-parallel training (gradients averaged every step).
  int local_steps = 0;
  // With local_steps: > 0 splits the training set among the ranks by a
  // Dirichlet over labels (non-IID clients, data/partition.h); 0: IID shards.
  double dirichlet_alpha = 0;
};

struct EpochMetrics {
  int epoch;
  double train_loss, train_accuracy, test_accuracy, lr, images_per_second, seconds;
};

struct TrainResult {
  std::vector<EpochMetrics> history;  // every epoch so far, those before a --resume too (from the checkpoint)
  bool stopped = false;               // ended by stop_after_epoch: only history (and float_accuracy) are set
  double float_accuracy = 0;       // the model as trained (fake-quant for QAT/PTQ)
  double integer_accuracy = 0;     // the converted integer model (an f32 run: W8A8 PTQ of it)
  double agreement = 0;            // share of test images where both give the same top-1
  double max_logit_diff = 0;       // largest |logit| difference between the two
  double max_logit_diff_steps = 0; // the same in output steps: s_in * max|w_c| of the last layer
  std::vector<std::pair<std::string, double>> ewgs_deltas;  // the last estimate, per quantizer
  int64_t float_bytes = 0;         // f32 parameters
  int64_t integer_bytes = 0;       // the converted model
  double integer_images_per_second = 0, float_images_per_second = 0;  // folded f32 / integer, batch 256
  std::string command;             // how to rerun it
  std::string report_json;         // where the report's JSON went ("" : nowhere)
  // Distributed runs: ranks, and this rank's bytes sent per step (gradients;
  // federated: per averaging) beside what f32 would have sent.
  int ranks = 1;
  int64_t bytes_per_step = 0, f32_bytes_per_step = 0;
};

absl::StatusOr<TrainResult> RunTraining(const TrainConfig& config, std::ostream& log);
// "--dataset=... --model=..." for the fields that differ from the defaults.
std::string CommandLine(const TrainConfig& config, const std::string& program);

// The CPU as /proc/cpuinfo names it, with its family and model numbers (a VM's
// name can be as vague as "Intel(R) Xeon(R) Processor"), e.g. "AMD EPYC 9R14
// (family 25 model 17), 2 cores"; "unknown CPU" where the file is missing.
std::string CpuName();

}  // namespace quanta::apps

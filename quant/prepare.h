// Quantization-aware training as a pass over a model: a MixedPrecisionPolicy
// (data: module-name patterns -> bits and quantizer) is applied by PrepareQat,
// which attaches weight and input quantizers to every Linear and Conv2d (Note
// [Quantization slots] in nn/layers.h), and returns what it did. Calibrate runs
// post-training quantization's range collection; Report and ModelSizeBytes say
// what the policy costs and keeps.
//
//   auto policy = MixedPrecisionPolicy::Parse("default 4 4 lsq\nlayer3.* 6 6\n");
//   PrepareReport r = PrepareQat(*net, *policy);     // conv1 and fc stay 8-bit
//   std::cout << r.ToString();
//   ProgressiveBits schedule({8, 6, 4}, /*epochs_per_stage=*/5);
//   schedule.Apply(r, epoch);                        // at the start of each epoch
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "quant/quantizer.h"

namespace quanta::quant {

// kEma: EMA min/max observer + STE (the design's dynamic scale factors, decay
// 0.999); kMinMax: min/max observer + STE (PTQ); kEwgs: EMA observer + EWGS;
// kLsq: learned step sizes (LSQ / LSQ+ for activations); kPercentile, kMse:
// those observers + STE; kApot: APoT levels for weights of 2 to 5 bits
// (ApotQuantizer), LSQ for activations and for 6- to 8-bit weights.
enum class QuantizerKind { kEma, kMinMax, kEwgs, kLsq, kPercentile, kMse, kApot };
const char* QuantizerName(QuantizerKind kind);
// The kind QuantizerName gives `name`, or nullopt.
std::optional<QuantizerKind> QuantizerKindFromName(std::string_view name);
// Every kind's name, for error messages: "ema, minmax, ewgs, lsq, percentile, mse, apot".
std::string QuantizerNames();
// Bits a policy may give a layer (the integer kernels hold 2 to 8).
inline constexpr int kMinPolicyBits = 2, kMaxPolicyBits = 8;

struct QConfig {
  int weight_bits = 8;
  int act_bits = 8;
  QuantizerKind kind = QuantizerKind::kEma;
  double ewgs_delta = 0.2;
  double ema_decay = 0.999;
  // LSQ quantizers' start (also APoT's activations): the MSE search, which
  // fine-tuning a trained model needs at 2 bits (docs/quantization.md).
  LsqInit lsq_init = LsqInit::kMse;
  // A block format instead of integer bits (Note [Block formats in policies] in
  // quant/quantizer.h): weight_bits / act_bits then hold the element's bits.
  std::optional<BlockFormat> weight_format, act_format;
};

struct PolicyRule {
  std::string pattern;  // glob over dotted module names; '*' matches anything
  int weight_bits, act_bits;
  std::optional<QuantizerKind> kind;
  std::optional<BlockFormat> weight_format = {}, act_format = {};  // instead of the bits
};

struct MixedPrecisionPolicy {
  QConfig defaults;
  std::vector<PolicyRule> rules;  // the last matching rule wins
  bool first_last_8bit = true;    // unless a rule names them, the first and last layers stay 8-bit
  QConfig For(const std::string& name, bool first_or_last) const;
  // OK, or InvalidArgument naming the defaults or the first rule whose bits lie
  // outside [kMinPolicyBits, kMaxPolicyBits]. PrepareQat checks it; a program
  // that builds a policy from its flags names the flag itself.
  absl::Status Validate() const;
  // Lines: "default W A [quantizer]", "PATTERN W A [quantizer]",
  // "first_last_8bit on|off", '#' comments. Quantizers: ema minmax ewgs lsq percentile mse apot.
  // W and A are bits (2 to 8) or a block format's name ("default mxfp4 mxfp8",
  // "layer3.* nvfp4 nvfp4"; BlockFormatNames()), which trains with the STE
  // whatever the quantizer (the quantizer still applies to integer slots).
  static absl::StatusOr<MixedPrecisionPolicy> Parse(std::string_view text, std::string_view source = "policy");
  static absl::StatusOr<MixedPrecisionPolicy> Load(const std::string& path);
};

struct PrepareReport {
  struct Row {
    std::string name, type;
    QConfig config;
    nn::QuantizableLayer* layer;
    std::shared_ptr<Quantizer> weight, input;
    // The layer whose input quantizer this one shares (Note [Quantization plan]
    // in quant/convert.h), or empty: `input` is then its own.
    std::string shared_input_with;
  };
  std::vector<Row> rows;
  // Embedding tables: 8-bit per-row weight quantization, no input quantizer;
  // not part of the first/last rule nor of calibration statistics.
  struct EmbeddingRow {
    std::string name;
    nn::Embedding* layer;
    std::shared_ptr<Quantizer> weight;
  };
  std::vector<EmbeddingRow> embeddings;
  std::string ToString() const;
};

// Attaches quantizers to every Linear and Conv2d of model according to policy,
// and an 8-bit per-row weight quantizer to every Embedding (the policy's kind).
// Parameter names stay as they were; quantizer state adds "<layer>.weight_quant.*"
// and "<layer>.input_quant.*". Create the optimizer after this call.
PrepareReport PrepareQat(nn::Module& model, const MixedPrecisionPolicy& policy);

// PTQ: runs `forward` over the batches without gradients in eval mode with every
// observer collecting, then freezes them (fake quantization on from then on).
// With bias_correction (Nagel et al. 2019), each layer with a bias then gets
// E[F(x, W)] - E[F(x, W_q)] added to it, x being the layer's quantized input
// over the batches: the mean output shift weight quantization causes.
void Calibrate(const PrepareReport& report, nn::Module& model, const std::vector<Tensor>& batches,
               const std::function<Tensor(const Tensor&)>& forward, bool bias_correction = false);
// Stops (or restarts) every observer; QAT freezes them late in training.
void FreezeObservers(const PrepareReport& report, bool frozen = true);

// Batch norm re-estimated on the quantized model before conversion: the running
// averages QAT leaves were collected while weights and ranges moved. Every
// BatchNorm2d's running mean and variance become the plain mean over `batches`
// of the batch statistics (PyTorch's momentum=None), computed in training mode
// without gradients and with every observer frozen, so the quantization ranges
// stay as trained and nothing learns. Restores the model's mode, the momenta and
// the observers' state; returns how many batch norms it re-estimated.
int ReestimateBatchNorm(const PrepareReport& report, nn::Module& model, const std::vector<Tensor>& batches,
                        const std::function<Tensor(const Tensor&)>& forward);

// EWGS's adaptive delta (Lee et al. 2021, sec. 3.3): for every EWGS quantizer,
// delta = (Tr(H) / N) / (3 std(g)), H and g the Hessian and gradient of the loss
// with respect to its output, Tr(H) by Hutchinson's estimator with Rademacher
// probes. Quanta has no double backward, so H v comes from central differences
// of the gradient, (g(y + eps v) - g(y - eps v)) / (2 eps), all quantizers probed
// at once (independent probes keep each block's trace unbiased). `loss(b)`
// computes the loss of batch b; returns the deltas set, clipped at 0, in report
// order (weights then inputs, EWGS quantizers only, a shared input once), in
// the units the gradient rule uses: quantization steps, i.e. the estimate in
// real units times the quantizer's step (Note [EWGS delta in steps]). Leaves
// gradients cleared.
std::vector<double> EstimateEwgsDelta(const PrepareReport& report, nn::Module& model,
                                      const std::function<Tensor(int)>& loss, int batches = 3, int probes = 8,
                                      double eps = 1e-3);

// Progressive quantization: bits step down through `stages` (e.g. 8, 6, 4), one
// stage every epochs_per_stage epochs, never below a layer's policy bits; the
// quantizers whose bits change are re-warmed.
class ProgressiveBits {
 public:
  ProgressiveBits(std::vector<int> stages, int epochs_per_stage) : stages_(std::move(stages)), per_(epochs_per_stage) {}
  int BitsAt(int epoch) const;
  void Apply(const PrepareReport& report, int epoch) const;

 private:
  std::vector<int> stages_;
  int per_;
};

// Optimizer groups for a prepared model: every parameter in group "model" at the
// base rate, the quantizers' own (LSQ steps and offsets) in group "quant" at
// quant_lr_mult times it and without weight decay.
std::vector<nn::ParamGroup> ParameterGroups(const nn::Module& model, double quant_lr_mult = 0.1);

// Per layer: bits, the weight's scale range, clipping rate and SQNR (dB) of its
// fake quantization, the input range in use, and — for FakeQuant inputs that
// recorded (Calibrate turns recording on) — the input's clipping rate, SQNR and
// distribution (median, 99th percentile and max of |x|) on the last calibration batch.
std::string QuantReport(const PrepareReport& report);
// The same as JSON: {"layers": [{"name", "weight_bits", "act_bits",
// "weight_scale": [min, max], "weight_clip_percent", "weight_sqnr_db",
// "input_range": [lo, hi], "input": {"clip_percent", "sqnr_db", "abs_p50",
// "abs_p99", "abs_max"}, "shared_input_with"}, ...]}; null where unknown.
std::string QuantReportJson(const PrepareReport& report);
// Runs `forward` over `batches` in eval mode with every input quantizer
// recording (nothing observes or learns), so that the report's input columns
// describe the model as it is now: after QAT, or after Calibrate.
void RecordInputs(const PrepareReport& report, nn::Module& model, const std::vector<Tensor>& batches,
                  const std::function<Tensor(const Tensor&)>& forward);
// Bytes of the model's parameters at the policy (quantized weights at their
// bits, everything else f32).
int64_t ModelSizeBytes(const nn::Module& model, const PrepareReport& report);

}  // namespace quanta::quant

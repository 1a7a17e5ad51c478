// The QAT pass, policies, calibration, progressive bits and reports.
#include "quant/prepare.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "autograd/autograd.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "quant/convert.h"

namespace quanta::quant {
namespace {

Tensor& BiasOf(nn::QuantizableLayer* layer) {
  if (auto* l = dynamic_cast<nn::Linear*>(layer)) return l->bias;
  return dynamic_cast<nn::Conv2d*>(layer)->bias;
}
// The layer's float op on its (quantized) input with a given weight.
Tensor Apply(nn::QuantizableLayer* layer, const Tensor& x, const Tensor& w) {
  if (dynamic_cast<nn::Linear*>(layer)) return quanta::Linear(x, w);
  return quanta::Conv2d(x, w, Tensor(), dynamic_cast<nn::Conv2d*>(layer)->options);
}

bool Glob(std::string_view pattern, std::string_view name) {
  if (pattern.empty()) return name.empty();
  if (pattern[0] == '*') {
    for (size_t i = 0; i <= name.size(); ++i) {
      if (Glob(pattern.substr(1), name.substr(i))) return true;
    }
    return false;
  }
  return !name.empty() && pattern[0] == name[0] && Glob(pattern.substr(1), name.substr(1));
}

// Weights get the range of the weight as it is now (EMA decay 0): they move every
// step and their range is known exactly; activations get the moving average.
// EMA quantizers: the design's max|x| average for symmetric specs, the (min, max)
// pair for affine ones (Note [Range to parameters] in quant/observer.h).
std::shared_ptr<Quantizer> MakeQuantizer(const QConfig& c, const QuantSpec& spec, int64_t channels, bool weight) {
  double decay = weight ? 0.0 : c.ema_decay;
  ObserverKind ema = spec.symmetric ? ObserverKind::kEmaAbsMax : ObserverKind::kEmaMinMax;
  switch (c.kind) {
    case QuantizerKind::kApot:
      if (weight && spec.bits <= 5) return std::make_shared<ApotQuantizer>(spec.bits, spec.per_channel ? channels : 1);
      [[fallthrough]];
    case QuantizerKind::kLsq:
      return std::make_shared<LsqQuantizer>(spec, spec.per_channel ? channels : 1, /*activation=*/!weight, c.lsq_init);
    case QuantizerKind::kEwgs:
      return std::make_shared<FakeQuant>(spec, ema, FakeQuantGradient::kEwgs, c.ewgs_delta, decay);
    case QuantizerKind::kMinMax: return std::make_shared<FakeQuant>(spec, ObserverKind::kMinMax);
    case QuantizerKind::kPercentile:
      return std::make_shared<FakeQuant>(spec.per_channel ? QuantSpec{spec.bits, spec.is_signed, spec.symmetric} : spec,
                                         ObserverKind::kPercentile);
    case QuantizerKind::kMse: return std::make_shared<FakeQuant>(spec, ObserverKind::kMse);
    case QuantizerKind::kEma: break;
  }
  return std::make_shared<FakeQuant>(spec, ema, FakeQuantGradient::kSte, 0, decay);
}

}  // namespace

const char* QuantizerName(QuantizerKind kind) {
  switch (kind) {
    case QuantizerKind::kEma: return "ema";
    case QuantizerKind::kMinMax: return "minmax";
    case QuantizerKind::kEwgs: return "ewgs";
    case QuantizerKind::kLsq: return "lsq";
    case QuantizerKind::kPercentile: return "percentile";
    case QuantizerKind::kMse: return "mse";
    case QuantizerKind::kApot: return "apot";
  }
  return "?";
}

constexpr QuantizerKind kEveryKind[] = {QuantizerKind::kEma,        QuantizerKind::kMinMax, QuantizerKind::kEwgs,
                                        QuantizerKind::kLsq,        QuantizerKind::kPercentile, QuantizerKind::kMse,
                                        QuantizerKind::kApot};

std::optional<QuantizerKind> QuantizerKindFromName(std::string_view name) {
  for (QuantizerKind k : kEveryKind) {
    if (name == QuantizerName(k)) return k;
  }
  return std::nullopt;
}

std::string QuantizerNames() {
  std::vector<std::string> names;
  for (QuantizerKind k : kEveryKind) names.push_back(QuantizerName(k));
  return absl::StrJoin(names, ", ");
}

absl::Status MixedPrecisionPolicy::Validate() const {
  auto in_range = [](int b) { return b >= kMinPolicyBits && b <= kMaxPolicyBits; };
  auto bad = [](const std::string& who, int wb, int ab) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": bits ", wb, "/", ab, " outside [", kMinPolicyBits, ", ",
                                                   kMaxPolicyBits, "]"));
  };
  if (!in_range(defaults.weight_bits) || !in_range(defaults.act_bits)) {
    return bad("default", defaults.weight_bits, defaults.act_bits);
  }
  for (const PolicyRule& r : rules) {
    if (!in_range(r.weight_bits) || !in_range(r.act_bits)) return bad("rule " + r.pattern, r.weight_bits, r.act_bits);
  }
  return absl::OkStatus();
}

QConfig MixedPrecisionPolicy::For(const std::string& name, bool first_or_last) const {
  QConfig c = defaults;
  bool named = false;
  for (const PolicyRule& r : rules) {
    if (!Glob(r.pattern, name)) continue;
    c.weight_bits = r.weight_bits;
    c.act_bits = r.act_bits;
    c.weight_format = r.weight_format;
    c.act_format = r.act_format;
    if (r.kind) c.kind = *r.kind;
    named = true;
  }
  if (first_or_last && first_last_8bit && !named) {
    c.weight_bits = c.act_bits = 8;
    c.weight_format = c.act_format = std::nullopt;  // int8, as for integer policies
  }
  if (c.weight_format) c.weight_bits = BlockElementBits(*c.weight_format);
  if (c.act_format) c.act_bits = BlockElementBits(*c.act_format);
  return c;
}

absl::StatusOr<MixedPrecisionPolicy> MixedPrecisionPolicy::Parse(std::string_view text, std::string_view source) {
  MixedPrecisionPolicy p;
  std::istringstream in{std::string(text)};
  std::string line;
  int number = 0;
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ":", number, ": ", why));
  };
  while (std::getline(in, line)) {
    ++number;
    if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    if (w.empty()) continue;
    if (w[0] == "first_last_8bit") {
      if (w.size() != 2 || (w[1] != "on" && w[1] != "off")) return bad("expected \"first_last_8bit on|off\"");
      p.first_last_8bit = w[1] == "on";
      continue;
    }
    if (w.size() < 3 || w.size() > 4) return bad("expected \"PATTERN WEIGHT_BITS ACT_BITS [QUANTIZER]\"");
    // Each of W and A: integer bits, or a block format's name.
    int wb = 0, ab = 0;
    std::optional<BlockFormat> wf = BlockFormatFromName(w[1]), af = BlockFormatFromName(w[2]);
    try {
      wb = wf ? BlockElementBits(*wf) : std::stoi(w[1]);
      ab = af ? BlockElementBits(*af) : std::stoi(w[2]);
    } catch (...) {
      return bad("bits must be integers or block formats (" + BlockFormatNames() + "), got \"" + w[1] + "\" and \"" +
                 w[2] + "\"");
    }
    if (wb < kMinPolicyBits || wb > kMaxPolicyBits || ab < kMinPolicyBits || ab > kMaxPolicyBits) {
      return bad(absl::StrCat("bits ", wb, "/", ab, " outside [", kMinPolicyBits, ", ", kMaxPolicyBits, "]"));
    }
    std::optional<QuantizerKind> kind;
    if (w.size() == 4) {
      kind = QuantizerKindFromName(w[3]);
      if (!kind) return bad("unknown quantizer \"" + w[3] + "\" (" + QuantizerNames() + ")");
    }
    if (w[0] == "default") {
      p.defaults.weight_bits = wb;
      p.defaults.act_bits = ab;
      p.defaults.weight_format = wf;
      p.defaults.act_format = af;
      if (kind) p.defaults.kind = *kind;
    } else {
      p.rules.push_back({w[0], wb, ab, kind, wf, af});
    }
  }
  return p;
}

absl::StatusOr<MixedPrecisionPolicy> MixedPrecisionPolicy::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the policy file"));
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path);
}

PrepareReport PrepareQat(nn::Module& model, const MixedPrecisionPolicy& policy) {
  absl::Status valid = policy.Validate();
  QUANTA_CHECK(valid.ok(), "prepare_qat: ", valid.message());
  std::vector<std::pair<std::string, nn::QuantizableLayer*>> layers;
  PrepareReport report;
  for (auto& [name, m] : model.NamedModules()) {
    if (auto* e = dynamic_cast<nn::Embedding*>(m)) {
      QConfig c = policy.For(name, false);
      c.weight_bits = 8;
      if (c.kind == QuantizerKind::kPercentile || c.kind == QuantizerKind::kMse) c.kind = QuantizerKind::kMinMax;
      QuantSpec spec{.bits = 8, .is_signed = true, .symmetric = true, .per_channel = true, .axis = 0};
      auto wq = MakeQuantizer(c, spec, e->weight.size(0), /*weight=*/true);
      e->AttachQuantizers(nullptr, wq);
      e->Train(model.is_training());
      report.embeddings.push_back({name, e, wq});
    } else if (auto* q = dynamic_cast<nn::QuantizableLayer*>(m)) {
      layers.emplace_back(name, q);
    }
  }
  QUANTA_CHECK(!layers.empty(), "prepare_qat: the model has no Linear or Conv2d layer");
  // Note [Quantization plan] in quant/convert.h: a value read by several layers
  // gets one input quantizer, its first reader's.
  std::map<nn::QuantizableLayer*, nn::QuantizableLayer*> owner;
  for (const auto& group : PlanSharedInputs(model)) {
    for (size_t i = 1; i < group.size(); ++i) owner[group[i]] = group[0];
  }
  std::map<nn::QuantizableLayer*, size_t> row_of;
  for (size_t i = 0; i < layers.size(); ++i) {
    auto& [name, layer] = layers[i];
    QConfig c = policy.For(name, i == 0 || i + 1 == layers.size());
    Tensor& w = WeightOf(layer);
    QuantSpec wspec{.bits = c.weight_bits, .is_signed = true, .symmetric = true, .per_channel = true, .axis = 0};
    QuantSpec aspec{.bits = c.act_bits, .is_signed = true, .symmetric = false, .per_channel = false};
    std::shared_ptr<Quantizer> wq = c.weight_format ? std::make_shared<BlockQuantizer>(*c.weight_format, true)
                                                    : MakeQuantizer(c, wspec, w.size(0), /*weight=*/true);
    std::shared_ptr<Quantizer> aq;
    if (!owner.count(layer)) {
      aq = c.act_format ? std::make_shared<BlockQuantizer>(*c.act_format, false)
                        : MakeQuantizer(c, aspec, 1, /*weight=*/false);
    }
    layer->AttachQuantizers(aq, wq);
    layer->Train(model.is_training());
    row_of[layer] = report.rows.size();
    report.rows.push_back({name, dynamic_cast<nn::Linear*>(layer) ? "Linear" : "Conv2d", c, layer, wq, aq});
  }
  for (auto& [reader, first] : owner) {
    QUANTA_CHECK(row_of.count(reader) && row_of.count(first), "prepare_qat: a reader of a shared value is not a layer");
    reader->ShareInputQuantizer(*first);
    PrepareReport::Row& row = report.rows[row_of[reader]];
    const PrepareReport::Row& from = report.rows[row_of[first]];
    row.input = from.input;
    row.config.act_bits = from.config.act_bits;
    row.config.act_format = from.config.act_format;
    row.shared_input_with = from.name;
  }
  return report;
}

std::string PrepareReport::ToString() const {
  std::string out = absl::StrFormat("%-28s %-7s %-7s %-5s %s\n", "layer", "type", "bits", "", "quantizer");
  for (const Row& r : rows) {
    const QConfig& c = r.config;
    if (c.weight_format || c.act_format) {
      std::string wname = c.weight_format ? BlockFormatName(*c.weight_format) : absl::StrCat("int", c.weight_bits);
      std::string aname = c.act_format ? BlockFormatName(*c.act_format) : absl::StrCat("int", c.act_bits);
      absl::StrAppendFormat(&out, "%-28s %-7s %-13s %s\n", r.name.empty() ? "(model)" : r.name, r.type,
                            absl::StrCat(wname, "/", aname),
                            c.weight_format && c.act_format ? "ste" : absl::StrCat("ste/", QuantizerName(c.kind)));
      continue;
    }
    absl::StrAppendFormat(&out, "%-28s %-7s W%dA%d        %s\n", r.name.empty() ? "(model)" : r.name, r.type,
                          c.weight_bits, c.act_bits, QuantizerName(c.kind));
  }
  for (const auto& e : embeddings) absl::StrAppendFormat(&out, "%-28s %-7s W8 per row\n", e.name, "Embed");
  return out;
}


void Calibrate(const PrepareReport& report, nn::Module& model, const std::vector<Tensor>& batches,
               const std::function<Tensor(const Tensor&)>& forward, bool bias_correction) {
  bool was_training = model.is_training();
  model.Eval();
  auto each = [&](const std::function<void(FakeQuant&)>& fn) {
    for (const auto& r : report.rows) {
      for (auto* q : {r.weight.get(), r.input.get()}) {
        if (auto* fq = dynamic_cast<FakeQuant*>(q)) fn(*fq);
      }
    }
    // Embedding tables are weights too: their per-row ranges come from the same pass.
    for (const auto& e : report.embeddings) {
      if (auto* fq = dynamic_cast<FakeQuant*>(e.weight.get())) fn(*fq);
    }
  };
  each([](FakeQuant& q) {
    q.observer().Reset();
    q.SetObserving(true);
    q.SetCalibrating(true);
  });
  {
    NoGradGuard no_grad;
    for (const Tensor& b : batches) forward(b);
  }
  each([](FakeQuant& q) {
    q.SetCalibrating(false);
    q.SetObserving(false);
  });
  // One more pass with fake quantization on: the report's input statistics, and
  // the inputs bias correction needs.
  for (const auto& r : report.rows) {
    if (auto* fq = dynamic_cast<FakeQuant*>(r.input.get())) fq->SetRecording(true);
  }
  std::vector<Tensor> shift(report.rows.size());
  {
    NoGradGuard no_grad;
    for (const Tensor& b : batches) {
      forward(b);
      for (size_t i = 0; bias_correction && i < report.rows.size(); ++i) {
        const auto& r = report.rows[i];
        auto* fq = dynamic_cast<FakeQuant*>(r.input.get());
        if (fq == nullptr || !BiasOf(r.layer).defined() || !fq->last_output().defined()) continue;
        const Tensor& x = fq->last_output();
        Tensor w = WeightOf(r.layer).Detach();
        Tensor diff = Sub(Apply(r.layer, x, w), Apply(r.layer, x, r.weight->Forward(w)));
        std::vector<int64_t> dims;  // every dim but the output channel (dim 1 for conv, last for linear)
        int channel = dynamic_cast<nn::Linear*>(r.layer) ? diff.dim() - 1 : 1;
        for (int d = 0; d < diff.dim(); ++d) {
          if (d != channel) dims.push_back(d);
        }
        Tensor mean = Div(Mean(diff, dims), static_cast<double>(batches.size()));
        shift[i] = shift[i].defined() ? Add(shift[i], mean) : mean;
      }
    }
    for (size_t i = 0; i < report.rows.size(); ++i) {
      if (shift[i].defined()) BiasOf(report.rows[i].layer).CopyFrom(Add(BiasOf(report.rows[i].layer), shift[i]));
    }
  }
  for (const auto& r : report.rows) {
    if (auto* fq = dynamic_cast<FakeQuant*>(r.input.get())) fq->SetRecording(false);
  }
  model.Train(was_training);
}

void FreezeObservers(const PrepareReport& report, bool frozen) {
  for (const auto& r : report.rows) {
    for (auto* q : {r.weight.get(), r.input.get()}) {
      if (auto* fq = dynamic_cast<FakeQuant*>(q)) fq->SetObserving(!frozen);
    }
  }
}

int ReestimateBatchNorm(const PrepareReport& report, nn::Module& model, const std::vector<Tensor>& batches,
                        const std::function<Tensor(const Tensor&)>& forward) {
  std::vector<std::pair<nn::BatchNorm2d*, double>> norms;  // and the momentum to put back
  for (auto& [name, m] : model.NamedModules()) {
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(m)) norms.emplace_back(bn, bn->momentum);
  }
  if (norms.empty() || batches.empty()) return 0;
  std::vector<std::pair<FakeQuant*, bool>> observers;
  for (const auto& r : report.rows) {
    for (auto* q : {r.weight.get(), r.input.get()}) {
      if (auto* fq = dynamic_cast<FakeQuant*>(q)) observers.emplace_back(fq, fq->observing());
    }
  }
  FreezeObservers(report, true);
  const bool was_training = model.is_training();
  model.Train();
  {
    NoGradGuard no_grad;
    for (size_t k = 0; k < batches.size(); ++k) {
      // momentum 1 / (k + 1): after batch k the running value is the mean of batches 0..k.
      for (auto& [bn, momentum] : norms) bn->momentum = 1.0 / static_cast<double>(k + 1);
      forward(batches[k]);
    }
  }
  for (auto& [bn, momentum] : norms) bn->momentum = momentum;
  for (auto& [fq, on] : observers) fq->SetObserving(on);
  model.Train(was_training);
  return static_cast<int>(norms.size());
}

std::vector<double> EstimateEwgsDelta(const PrepareReport& report, nn::Module& model,
                                      const std::function<Tensor(int)>& loss, int batches, int probes, double eps) {
  std::vector<FakeQuant*> qs;
  for (const auto& r : report.rows) {
    for (auto* q : {r.weight.get(), r.input.get()}) {
      auto* fq = dynamic_cast<FakeQuant*>(q);
      bool seen = std::find(qs.begin(), qs.end(), fq) != qs.end();  // a shared input quantizer comes once
      if (fq != nullptr && !seen && fq->gradient() == FakeQuantGradient::kEwgs) qs.push_back(fq);
    }
  }
  std::vector<double> delta(qs.size(), 0.0);
  if (qs.empty()) return delta;
  Generator gen(12345);
  std::vector<Tensor> grads(qs.size());
  auto clear = [&] {
    for (Tensor& p : model.Parameters()) p.SetGrad(Tensor());
  };
  auto pass = [&](int b, const std::vector<Tensor>& perturbations) {
    for (size_t i = 0; i < qs.size(); ++i) {
      qs[i]->SetProbe(perturbations.empty() ? Tensor() : perturbations[i], [&grads, i](const Tensor& g) { grads[i] = g.Detach(); });
    }
    Backward(loss(b));
    clear();
  };
  for (int b = 0; b < batches; ++b) {
    pass(b, {});  // the gradient at the point itself, and each output's shape
    std::vector<Tensor> base = grads;
    std::vector<double> trace(qs.size(), 0.0);
    for (int k = 0; k < probes; ++k) {
      std::vector<Tensor> v(qs.size()), plus(qs.size()), minus(qs.size());
      for (size_t i = 0; i < qs.size(); ++i) {
        v[i] = Sub(Mul(Bernoulli(base[i].shape(), 0.5, &gen, base[i].dtype()), 2.0), 1.0);  // Rademacher
        plus[i] = Mul(v[i], eps);
        minus[i] = Mul(v[i], -eps);
      }
      pass(b, plus);
      std::vector<Tensor> g_plus = grads;
      pass(b, minus);
      for (size_t i = 0; i < qs.size(); ++i) {
        Tensor hv = Div(Sub(g_plus[i], grads[i]), 2 * eps);
        trace[i] += Sum(Mul(v[i], hv)).item<double>() / probes;
      }
    }
    for (size_t i = 0; i < qs.size(); ++i) {
      double n = static_cast<double>(base[i].numel());
      double sd = std::sqrt(Var(base[i].To(DType::kF64)).item<double>());
      if (sd > 0) delta[i] += (trace[i] / n) / (3 * sd) / batches;
    }
  }
  for (size_t i = 0; i < qs.size(); ++i) {
    qs[i]->SetProbe(Tensor(), nullptr);
    // Note [EWGS delta in steps]: H and g are taken with respect to the real
    // output y = s q, the gradient rule applies delta to x/s - round(x/s), a
    // distance in steps. In step units g' = s g and H' = s^2 H, so delta' = s delta
    // (per channel: the mean step).
    double step = Mean(qs[i]->Params().first.To(DType::kF64)).item<double>();
    delta[i] = std::max(0.0, delta[i]) * step;
    qs[i]->SetEwgsDelta(delta[i]);
  }
  return delta;
}

int ProgressiveBits::BitsAt(int epoch) const {
  QUANTA_CHECK(!stages_.empty() && per_ > 0, "progressive bits: no stages");
  size_t stage = std::min<size_t>(static_cast<size_t>(std::max(0, epoch) / per_), stages_.size() - 1);
  return stages_[stage];
}

void ProgressiveBits::Apply(const PrepareReport& report, int epoch) const {
  int bits = BitsAt(epoch);
  for (const auto& r : report.rows) {
    int wb = std::max(bits, r.config.weight_bits), ab = std::max(bits, r.config.act_bits);
    // Block formats keep their element (Note [Block formats in policies]).
    if (!r.config.weight_format && r.weight->spec().bits != wb) r.weight->SetBits(wb);
    if (!r.config.act_format && r.input->spec().bits != ab) r.input->SetBits(ab);
  }
}

namespace {

// One row of the report, as numbers (NaN: unknown).
struct LayerStats {
  std::string name, shared_input_with;
  int weight_bits = 0, act_bits = 0;
  std::string bits;  // "W4A4", or the block formats: "mxfp4/mxfp8"
  double scale_min = NAN, scale_max = NAN, clip = NAN, sqnr = NAN, in_lo = NAN, in_hi = NAN;
  Quantizer::Stats input;
};

std::vector<LayerStats> Stats(const PrepareReport& report) {
  NoGradGuard no_grad;
  std::vector<LayerStats> rows;
  for (const auto& r : report.rows) {
    LayerStats l{.name = r.name, .shared_input_with = r.shared_input_with, .weight_bits = r.weight->spec().bits,
                 .act_bits = r.input->spec().bits};
    l.bits = absl::StrCat("W", l.weight_bits, "A", l.act_bits);
    if (const QConfig& c = r.config; c.weight_format || c.act_format) {
      l.bits = absl::StrCat(c.weight_format ? BlockFormatName(*c.weight_format) : absl::StrCat("int", l.weight_bits),
                            "/", c.act_format ? BlockFormatName(*c.act_format) : absl::StrCat("int", l.act_bits));
    }
    Tensor w = WeightOf(r.layer);
    if (auto* bq = dynamic_cast<BlockQuantizer*>(r.weight.get())) {
      // No per-channel grid: the SQNR of the blocks alone.
      std::vector<float> v = w.Detach().To(Device::Cpu()).To(DType::kF32).Contiguous().ToVector<float>();
      std::vector<float> q =
          BlockFakeQuantizeWeight(w.Detach(), bq->format()).To(Device::Cpu()).Contiguous().ToVector<float>();
      double signal = 0, noise = 0;
      for (size_t i = 0; i < v.size(); ++i) {
        signal += static_cast<double>(v[i]) * v[i];
        noise += (static_cast<double>(v[i]) - q[i]) * (static_cast<double>(v[i]) - q[i]);
      }
      l.sqnr = noise > 0 ? 10 * std::log10(signal / noise) : INFINITY;
    } else if (r.weight->ready()) {
      Quantizer::WeightGrid g = r.weight->Grid(w);
      l.scale_min = *std::min_element(g.scales.begin(), g.scales.end());
      l.scale_max = *std::max_element(g.scales.begin(), g.scales.end());
      l.clip = 100 * g.clip;
      std::vector<float> v = w.Detach().To(Device::Cpu()).To(DType::kF32).Contiguous().ToVector<float>();
      size_t per = v.size() / g.scales.size();
      double signal = 0, noise = 0;
      for (size_t i = 0; i < v.size(); ++i) {
        double e = v[i] - g.codes[i] * g.scales[i / per];
        signal += static_cast<double>(v[i]) * v[i];
        noise += e * e;
      }
      l.sqnr = noise > 0 ? 10 * std::log10(signal / noise) : INFINITY;
    }
    if (r.input->ready() && !dynamic_cast<BlockQuantizer*>(r.input.get())) {
      auto [s, z] = r.input->Params();
      double sc = s.item<float>(), zp = z.item<float>();
      const QuantSpec& sp = r.input->spec();
      l.in_lo = sc * (sp.quant_min() - zp);
      l.in_hi = sc * (sp.quant_max() - zp);
    }
    l.input = r.input->stats();
    rows.push_back(l);
  }
  return rows;
}

std::string Json(double v) { return std::isfinite(v) ? absl::StrFormat("%.6g", v) : "null"; }

}  // namespace

std::string QuantReport(const PrepareReport& report) {
  std::string out = absl::StrFormat("%-24s %-6s %-22s %-9s %-8s %-20s %s\n", "layer", "bits", "weight scale [min, max]",
                                    "clip %", "SQNR dB", "input range", "input clip% SQNR |x| p50/p99/max");
  for (const LayerStats& l : Stats(report)) {
    bool w = !std::isnan(l.scale_min);
    std::string scale = w ? absl::StrFormat("[%.3g, %.3g]", l.scale_min, l.scale_max) : "-";
    std::string clip = w ? absl::StrFormat("%.3f", l.clip) : "-";
    std::string sqnr = std::isnan(l.sqnr) ? "-" : absl::StrFormat("%.1f", l.sqnr);  // block formats: SQNR alone
    std::string input = std::isnan(l.in_lo) ? "-" : absl::StrFormat("[%.3g, %.3g]", l.in_lo, l.in_hi);
    std::string input_stats = l.input.valid ? absl::StrFormat("%.3f %.1f %.3g/%.3g/%.3g", 100 * l.input.clip_rate,
                                                              l.input.sqnr_db, l.input.abs_p50, l.input.abs_p99,
                                                              l.input.abs_max)
                                            : "-";
    if (!l.shared_input_with.empty()) input_stats = "(reads " + l.shared_input_with + "'s quantized input)";
    absl::StrAppendFormat(&out, "%-24s %-6s %-22s %-9s %-8s %-20s %s\n", l.name, l.bits, scale, clip, sqnr, input,
                          input_stats);
  }
  return out;
}

std::string QuantReportJson(const PrepareReport& report) {
  std::vector<std::string> layers;
  for (const LayerStats& l : Stats(report)) {
    std::string input = l.input.valid && l.shared_input_with.empty()
                            ? absl::StrCat("{\"clip_percent\": ", Json(100 * l.input.clip_rate), ", \"sqnr_db\": ",
                                           Json(l.input.sqnr_db), ", \"abs_p50\": ", Json(l.input.abs_p50),
                                           ", \"abs_p99\": ", Json(l.input.abs_p99), ", \"abs_max\": ",
                                           Json(l.input.abs_max), "}")
                            : "null";
    layers.push_back(absl::StrCat(
        "    {\"name\": \"", l.name, "\", \"weight_bits\": ", l.weight_bits, ", \"act_bits\": ", l.act_bits,
        ", \"weight_scale\": [", Json(l.scale_min), ", ", Json(l.scale_max), "], \"weight_clip_percent\": ",
        Json(l.clip), ", \"weight_sqnr_db\": ", Json(l.sqnr), ", \"input_range\": [", Json(l.in_lo), ", ",
        Json(l.in_hi), "], \"input\": ", input, ", \"shared_input_with\": ",
        l.shared_input_with.empty() ? "null" : "\"" + l.shared_input_with + "\"", "}"));
  }
  return absl::StrCat("{\"layers\": [\n", absl::StrJoin(layers, ",\n"), "\n]}\n");
}

void RecordInputs(const PrepareReport& report, nn::Module& model, const std::vector<Tensor>& batches,
                  const std::function<Tensor(const Tensor&)>& forward) {
  bool was_training = model.is_training();
  model.Eval();  // observers observe only in training (or calibrating): nothing changes
  for (const auto& r : report.rows) r.input->SetRecording(true);
  {
    NoGradGuard no_grad;
    for (const Tensor& b : batches) forward(b);
  }
  for (const auto& r : report.rows) r.input->SetRecording(false);
  model.Train(was_training);
}

std::vector<nn::ParamGroup> ParameterGroups(const nn::Module& model, double quant_lr_mult) {
  nn::ParamGroup plain{.name = "model"}, quant{.lr_mult = quant_lr_mult, .weight_decay = 0.0, .name = "quant"};
  for (const auto& [name, t] : model.NamedParameters()) {
    (name.find("_quant.") != std::string::npos ? quant : plain).params.push_back(*t);
  }
  std::vector<nn::ParamGroup> groups = {plain};
  if (!quant.params.empty()) groups.push_back(quant);
  return groups;
}

int64_t ModelSizeBytes(const nn::Module& model, const PrepareReport& report) {
  std::map<const Tensor*, const Quantizer*> quantizer;
  for (const auto& r : report.rows) quantizer[&WeightOf(r.layer)] = r.weight.get();
  int64_t bits = 0;
  for (const auto& [name, t] : model.NamedParameters()) {
    if (name.find("_quant.") != std::string::npos) continue;  // quantizer state: not deployed as weights
    auto it = quantizer.find(t);
    if (it == quantizer.end()) {
      bits += t->numel() * 32;
    } else if (auto* bq = dynamic_cast<const BlockQuantizer*>(it->second)) {
      // Elements and scales of the padded blocks, and NVFP4's tensor scale.
      bits += 8 * BlockWeightBytes(t->shape(), bq->format());
    } else {
      bits += t->numel() * it->second->spec().bits + t->size(0) * 32;  // one f32 scale per output channel
    }
  }
  return (bits + 7) / 8;
}

}  // namespace quanta::quant

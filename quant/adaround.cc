// AdaRound: learned up/down rounding of each layer's weights (Note [AdaRound]).
#include "quant/adaround.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "absl/strings/str_format.h"
#include "autograd/autograd.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "nn/optim.h"
#include "quant/convert.h"

namespace quanta::quant {
namespace {

constexpr double kZeta = 1.1, kGamma = -0.1;

const Tensor& BiasOf(nn::QuantizableLayer* layer) {
  if (auto* l = dynamic_cast<nn::Linear*>(layer)) return l->bias;
  return dynamic_cast<nn::Conv2d*>(layer)->bias;
}
bool IsLinear(nn::QuantizableLayer* layer) { return dynamic_cast<nn::Linear*>(layer) != nullptr; }

// One layer's problem: the product, then f (Note [AdaRound]) as a per-channel
// affine map and an optional ReLU.
struct Layer {
  PlannedLayer plan;
  Quantizer* weight_quant;
  Tensor factor, shift;  // broadcast along the output channel
  int channel_dim;       // 1 for a convolution, the last for a linear layer

  Tensor Output(const Tensor& x, const Tensor& w) const {
    Tensor y = IsLinear(plan.layer) ? quanta::Linear(x, w)
                                    : quanta::Conv2d(x, w, Tensor(), dynamic_cast<nn::Conv2d*>(plan.layer)->options);
    y = Add(Mul(y, factor), shift);
    return plan.relu && !plan.residual ? Relu(y) : y;
  }
  // Mean over positions of the squared error summed over channels.
  Tensor Error(const Tensor& y, const Tensor& target) const {
    int d = channel_dim < 0 ? y.dim() - 1 : channel_dim;
    return Mean(Sum(Square(Sub(y, target)), {d}));
  }
};

Layer Describe(const PlannedLayer& p, Quantizer* wq) {
  Layer l{p, wq, Tensor(), Tensor(), IsLinear(p.layer) ? -1 : 1};
  const Tensor& w = WeightOf(p.layer);
  int64_t O = w.size(0);
  std::vector<float> factor(O, 1.f), shift(O, 0.f);
  if (BiasOf(p.layer).defined()) shift = BiasOf(p.layer).ToVector<float>();
  if (p.bn) {
    std::vector<float> mean = p.bn->running_mean.ToVector<float>(), var = p.bn->running_var.ToVector<float>();
    std::vector<float> gamma = p.bn->weight.defined() ? p.bn->weight.ToVector<float>() : std::vector<float>(O, 1.f);
    std::vector<float> beta = p.bn->bias.defined() ? p.bn->bias.ToVector<float>() : std::vector<float>(O, 0.f);
    QUANTA_CHECK(static_cast<int64_t>(mean.size()) == O, "AdaRound: ", p.name, " has ", O,
                 " channels, its batch norm ", mean.size());
    for (int64_t o = 0; o < O; ++o) {
      double f = gamma[o] / std::sqrt(static_cast<double>(var[o]) + p.bn->eps);
      factor[o] = static_cast<float>(f);
      shift[o] = static_cast<float>((shift[o] - mean[o]) * f + beta[o]);
    }
  }
  Shape shape = IsLinear(p.layer) ? Shape{O} : Shape{1, O, 1, 1};
  l.factor = Tensor::FromVector(factor, shape).To(w.device());
  l.shift = Tensor::FromVector(shift, shape).To(w.device());
  return l;
}

// Per element of w (O, ...): the step and zero point of its output channel.
std::pair<std::vector<float>, std::vector<float>> StepsPerElement(const Quantizer& q, const Tensor& w,
                                                                  const std::string& name) {
  QUANTA_CHECK(dynamic_cast<const ApotQuantizer*>(&q) == nullptr, "AdaRound: ", name,
               " has APoT weights; learned rounding needs a uniform grid (use --rounding=nearest with apot)");
  QUANTA_CHECK(dynamic_cast<const BlockQuantizer*>(&q) == nullptr, "AdaRound: ", name, " has ",
               BlockFormatName(dynamic_cast<const BlockQuantizer&>(q).format()),
               " weights; learned rounding needs a uniform integer grid (use --rounding=nearest with block formats)");
  auto [scale, zp] = q.Params();
  std::vector<float> s = scale.ToVector<float>(), z = zp.ToVector<float>();
  int64_t O = w.size(0), per = w.numel() / std::max<int64_t>(O, 1);
  QUANTA_CHECK(s.size() == 1 || (static_cast<int64_t>(s.size()) == O && q.spec().axis == 0), "AdaRound: ", name,
               " has ", s.size(), " weight steps for weight ", ShapeToString(w.shape()), " (", q.spec().ToString(),
               "); per-tensor or per output channel only");
  std::vector<float> se(w.numel()), ze(w.numel());
  for (int64_t i = 0; i < w.numel(); ++i) {
    size_t c = s.size() == 1 ? 0 : static_cast<size_t>(i / per);
    se[i] = s[c];
    ze[i] = z[std::min(c, z.size() - 1)];
  }
  return {se, ze};
}


// One layer's rounding variables: the grid floor(w / s) + z and V, where
// h(V) is the remainder at the start (Note [AdaRound]).
struct Rounding {
  Tensor* weight;  // the layer's parameter
  Tensor w;        // its float value
  Quantizer* quantizer;
  Tensor base, s, z, v;
  double qmin, qmax;

  Rounding(Tensor* weight, Quantizer* q, const std::string& name) : weight(weight), w(weight->Detach().Clone()), quantizer(q) {
    const Device dev = w.device();
    const QuantSpec& spec = q->spec();
    auto [se, ze] = StepsPerElement(*q, w, name);
    std::vector<float> wv = w.To(Device::Cpu()).ToVector<float>();
    std::vector<float> b(wv.size()), v0(wv.size());
    for (size_t i = 0; i < wv.size(); ++i) {
      double x = static_cast<double>(wv[i]) / se[i];
      double fl = std::floor(x), frac = x - fl;
      b[i] = static_cast<float>(fl + ze[i]);
      double sig = (frac - kGamma) / (kZeta - kGamma);  // in [1/12, 11/12]: finite V
      v0[i] = static_cast<float>(std::log(sig / (1 - sig)));
    }
    base = Tensor::FromVector(b, w.shape()).To(dev);
    s = Tensor::FromVector(se, w.shape()).To(dev);
    z = Tensor::FromVector(ze, w.shape()).To(dev);
    qmin = static_cast<double>(spec.quant_min());
    qmax = static_cast<double>(spec.quant_max());
    v = Tensor::FromVector(v0, w.shape()).To(dev);
    v.SetRequiresGrad();
  }
  Tensor Soft() const { return Clamp(Add(Mul(Sigmoid(v), kZeta - kGamma), kGamma), 0.0, 1.0); }
  Tensor Grid(const Tensor& h) const { return Mul(Sub(Clamp(Add(base, h), qmin, qmax), z), s); }
  Tensor Hard() const { return Grid(Ge(v.Detach(), 0.0).To(DType::kF32)); }
  Tensor Nearest() const { return quantizer->Forward(w); }
  // sum (1 - |2h - 1|^beta), written as numel - sum |2h - 1|^beta
  static Tensor Regularizer(const Tensor& h, double beta) {
    return Sub(Neg(Sum(Pow(Abs(Sub(Mul(h, 2.0), 1.0)), beta))), -static_cast<double>(h.numel()));
  }
};

// The blocks to reconstruct whole (BRECQ): the module holding each layer that a
// residual add follows, with every planned layer under it, when its first layer
// reads the block's input (the module's Forward can then be run on it).
std::map<std::string, nn::Layer*> ResidualBlocks(nn::Module& model, const std::vector<PlannedLayer>& plan) {
  std::map<std::string, nn::Module*> modules;
  std::map<std::string, nn::Layer*> blocks;
  for (auto& [name, m] : model.NamedModules()) modules[name] = m;
  for (const PlannedLayer& p : plan) {
    size_t dot = p.name.rfind('.');
    if (!p.residual || dot == std::string::npos) continue;
    auto it = modules.find(p.name.substr(0, dot));
    nn::Layer* layer = it == modules.end() ? nullptr : dynamic_cast<nn::Layer*>(it->second);
    if (layer != nullptr) blocks[it->first] = layer;
  }
  return blocks;
}

}  // namespace

std::vector<AdaRoundRow> AdaRound(const PrepareReport& report, nn::Module& model, const std::vector<Tensor>& batches,
                                  const std::function<Tensor(const Tensor&)>& forward,
                                  const AdaRoundOptions& o) {
  QUANTA_CHECK(!batches.empty(), "AdaRound: no calibration batches");
  QUANTA_CHECK(GradModeEnabled(), "AdaRound: learns the rounding by gradient descent; called under NoGradGuard");
  QUANTA_CHECK(o.iterations >= 1 && o.batch_size >= 1 && o.lr > 0 && o.warmup >= 0 && o.warmup < 1,
               "AdaRound: iterations ", o.iterations, ", batch_size ", o.batch_size, ", lr ", o.lr, ", warmup ",
               o.warmup, " (need >= 1, >= 1, > 0, [0, 1))");
  std::map<nn::QuantizableLayer*, const PrepareReport::Row*> row_of;
  for (const auto& r : report.rows) row_of[r.layer] = &r;
  std::vector<PlannedLayer> plan = PlanLayers(model);
  if (plan.empty()) {  // no integer form: report order, f = the bias
    for (const auto& r : report.rows) plan.push_back({r.name, r.layer, nullptr, false, false, false});
  }
  std::vector<Quantizer*> quantizers;  // every quantizer, to switch the model to float and back
  for (const auto& r : report.rows) {
    for (auto* q : {r.weight.get(), r.input.get()}) {
      if (q != nullptr) quantizers.push_back(q);
    }
  }
  for (const auto& e : report.embeddings) {
    if (e.weight) quantizers.push_back(e.weight.get());
  }
  std::vector<bool> enabled;
  for (Quantizer* q : quantizers) enabled.push_back(q->enabled());
  const bool was_training = model.is_training();
  model.Eval();

  // Runs fn on the float model: every quantizer off, every rounded weight back
  // to its float value.
  std::vector<std::pair<Tensor*, Tensor>> originals;  // rounded layers: weight, float value
  auto in_float = [&](const std::function<void()>& fn) {
    std::vector<Tensor> rounded;
    for (Quantizer* q : quantizers) q->SetEnabled(false);
    for (auto& [w, f] : originals) {
      rounded.push_back(w->Detach().Clone());
      w->CopyFrom(f);
    }
    fn();
    for (size_t i = 0; i < quantizers.size(); ++i) quantizers[i]->SetEnabled(enabled[i]);
    for (size_t i = 0; i < originals.size(); ++i) originals[i].first->CopyFrom(rounded[i]);
  };
  // A layer's inputs over the calibration set, with quantization on (x_q) or
  // in the float model (x_f).
  auto inputs = [&](nn::QuantizableLayer* layer, const std::string& name, bool quantized) {
    std::vector<Tensor> xs;
    layer->input_hook = [&xs](const Tensor& x) { xs.push_back(x.Detach().Clone()); };
    {
      NoGradGuard no_grad;
      auto run = [&] {
        for (const Tensor& b : batches) forward(b);
      };
      quantized ? run() : in_float(run);
    }
    layer->input_hook = nullptr;
    QUANTA_CHECK(!xs.empty(), "AdaRound: the model's forward never ran layer ", name);
    return Concat(xs, 0);
  };

  // What is reconstructed at once: a layer, or (blocks) a residual block.
  struct Unit {
    std::string name;
    nn::Layer* block = nullptr;
    std::vector<const PlannedLayer*> layers;
  };
  std::vector<Unit> units;
  std::map<std::string, nn::Layer*> blocks;
  if (o.blocks) blocks = ResidualBlocks(model, plan);
  for (const PlannedLayer& p : plan) {
    auto it = row_of.find(p.layer);
    if (it == row_of.end() || !it->second->weight) continue;
    QUANTA_CHECK(!p.folded_in_training, "AdaRound: ", p.name,
                 " is a ConvBn2d, whose weight quantizer sees the folded weight, not a parameter");
    QUANTA_CHECK(it->second->weight->ready(), "AdaRound: the weight quantizer of ", p.name,
                 " has not seen data (Calibrate first)");
    std::string block;
    for (const auto& [name, m] : blocks) {
      if (p.name.rfind(name + ".", 0) == 0) block = name;
    }
    if (!block.empty() && !units.empty() && units.back().name == block) {
      units.back().layers.push_back(&p);
    } else {
      for (const Unit& u : units) {
        QUANTA_CHECK(block.empty() || u.name != block, "AdaRound: the layers of block ", block,
                     " do not run one after another (", p.name, " comes after ", units.back().name, ")");
      }
      units.push_back({block.empty() ? p.name : block, block.empty() ? nullptr : blocks[block], {&p}});
    }
  }

  std::mt19937_64 rng(o.seed);
  std::vector<AdaRoundRow> rows;
  for (const Unit& unit : units) {
    const PlannedLayer& first = *unit.layers[0];
    std::vector<Rounding> vars;
    for (const PlannedLayer* p : unit.layers) vars.emplace_back(&WeightOf(p->layer), row_of[p->layer]->weight.get(), p->name);
    Layer layer = Describe(first, vars[0].quantizer);  // a single layer's f
    // The unit's output from its input: the layer's product and f, or the
    // block's own Forward (its layers read the weight tensors as they are).
    auto output = [&](const Tensor& x, const std::vector<Tensor>& weights) {
      if (unit.block == nullptr) return layer.Output(x, weights[0]);
      std::vector<Tensor> saved;
      for (size_t i = 0; i < vars.size(); ++i) {
        saved.push_back(*vars[i].weight);
        *vars[i].weight = weights[i];
      }
      Tensor y = unit.block->Forward(x);
      for (size_t i = 0; i < vars.size(); ++i) *vars[i].weight = saved[i];
      return y;
    };
    auto error = [&](const Tensor& y, const Tensor& target) {
      if (unit.block == nullptr) return layer.Error(y, target);
      return Mean(Sum(Square(Sub(y, target)), {1}));
    };
    auto weights_of = [&](auto&& value) {
      std::vector<Tensor> ws;
      for (const Rounding& r : vars) ws.push_back(value(r));
      return ws;
    };

    std::vector<Tensor> nearest;  // while the weight quantizers are on
    {
      NoGradGuard no_grad;
      nearest = weights_of([](const Rounding& r) { return r.Nearest(); });
    }
    Tensor xq = inputs(first.layer, first.name, true), xf = inputs(first.layer, first.name, false);
    Tensor target;
    double mse_nearest = 0;
    // A block's layers run with their weight quantizers off: the weights are
    // the grid values themselves (soft while learning).
    std::vector<bool> weight_enabled;
    for (const Rounding& r : vars) weight_enabled.push_back(r.quantizer->enabled());
    auto weights_raw = [&](bool raw) {
      if (unit.block == nullptr) return;
      for (size_t i = 0; i < vars.size(); ++i) vars[i].quantizer->SetEnabled(raw ? false : weight_enabled[i]);
    };
    {
      NoGradGuard no_grad;
      if (unit.block == nullptr) {
        target = layer.Output(xf, vars[0].w);
      } else {
        in_float([&] { target = unit.block->Forward(xf); });
      }
      weights_raw(true);
      mse_nearest = error(output(xq, nearest), target).item<double>();
    }

    std::vector<Tensor> params;
    for (const Rounding& r : vars) params.push_back(r.v);
    nn::Adam adam({nn::ParamGroup{.params = params}}, nn::AdamOptions{.lr = o.lr});
    const int64_t n = xq.size(0), b = std::min<int64_t>(o.batch_size, n);
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    const int warm = static_cast<int>(o.warmup * o.iterations);
    for (int step = 0; step < o.iterations; ++step) {
      std::shuffle(order.begin(), order.end(), rng);
      Tensor idx = Tensor::FromVector(std::vector<int64_t>(order.begin(), order.begin() + b), {b}).To(xq.device());
      std::vector<Tensor> hs = weights_of([](const Rounding& r) { return r.Soft(); });
      std::vector<Tensor> ws;
      for (size_t i = 0; i < vars.size(); ++i) ws.push_back(vars[i].Grid(hs[i]));
      Tensor loss = error(output(IndexSelect(xq, 0, idx), ws), IndexSelect(target, 0, idx));
      if (step >= warm) {
        double t = static_cast<double>(step - warm) / std::max(1, o.iterations - warm);
        double beta = o.beta_end + (o.beta_start - o.beta_end) * (1 - t);
        for (const Tensor& h : hs) loss = Add(loss, Mul(Rounding::Regularizer(h, beta), o.reg_weight));
      }
      adam.ZeroGrad();
      Backward(loss);
      adam.Step();
    }

    AdaRoundRow row{unit.block ? unit.name + " (block of " + std::to_string(vars.size()) + ")" : unit.name,
                    vars[0].quantizer->spec().bits};
    row.mse_nearest = mse_nearest;
    {
      NoGradGuard no_grad;
      std::vector<Tensor> learned = weights_of([](const Rounding& r) { return r.Hard(); });
      row.mse_learned = error(output(xq, learned), target).item<double>();
      if (row.mse_learned > row.mse_nearest) {  // never worse than nearest on the calibration set
        row.kept_nearest = true;
        row.mse_learned = row.mse_nearest;
        learned = nearest;
      }
      double flipped = 0, count = 0;
      for (size_t i = 0; i < vars.size(); ++i) {
        flipped += Sum(Ne(learned[i], nearest[i]).To(DType::kF32)).item<double>();
        count += static_cast<double>(learned[i].numel());
        originals.emplace_back(vars[i].weight, vars[i].w);
        vars[i].weight->CopyFrom(learned[i]);
      }
      row.flipped = flipped / count;
      weights_raw(false);
    }
    rows.push_back(row);
  }
  model.Train(was_training);
  return rows;
}

std::string AdaRoundTable(const std::vector<AdaRoundRow>& rows) {
  std::string out = absl::StrFormat("%-28s %4s %14s %14s %9s\n", "layer", "bits", "mse nearest", "mse adaround",
                                    "flipped");
  for (const auto& r : rows) {
    out += absl::StrFormat("%-28s %4d %14.6g %14.6g %8.2f%%%s\n", r.name, r.bits, r.mse_nearest, r.mse_learned,
                           100 * r.flipped, r.kept_nearest ? "  (learned was worse: nearest kept)" : "");
  }
  return out;
}

}  // namespace quanta::quant

// Convert: quantizer parameters into integer weights and activation parameters,
// batch norm folded, and the generic conversion of Sequential models.
#include "quant/convert.h"

#include <cmath>
#include <limits>
#include <map>
#include <typeinfo>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "quant/quantizer.h"

namespace quanta::quant {
namespace {

const Quantizer& ReadyQuantizer(const std::shared_ptr<nn::Layer>& slot, const std::string& name, const char* which) {
  auto* q = dynamic_cast<const Quantizer*>(slot.get());
  QUANTA_CHECK(q != nullptr, "convert: ", name, " has no ", which,
               " quantizer; run PrepareQat (then train, or Calibrate) before converting");
  QUANTA_CHECK(q->enabled() && q->ready(), "convert: the ", which, " quantizer of ", name,
               q->enabled() ? " has not seen data (train or Calibrate first)" : " is disabled");
  return *q;
}

// The integer range to store in QuantParams: 0, 0 (the dtype's own) unless narrower.
QuantParams WithSpecRange(QuantParams p, const QuantSpec& spec, DType dtype) {
  int64_t full_min = dtype == DType::kQUInt8 ? 0 : dtype == DType::kQInt4 ? -8 : -128;
  int64_t full_max = dtype == DType::kQUInt8 ? 255 : dtype == DType::kQInt4 ? 7 : 127;
  if (spec.quant_min() == full_min && spec.quant_max() == full_max) return p;
  return p.WithRange(spec.quant_min(), spec.quant_max());
}

struct Activation {
  DType dtype;
  QuantParams params;
  int bits;
};

// What the layer's input quantizer does to its input, as tensor parameters. The
// zero point is already an integer (an LSQ+ offset is rounded in training's
// forward pass too, Note [LSQ+ offsets on the integer grid] in quant/quantizer.h);
// rint keeps ties to even should a caller pass a fractional one.
Activation InputActivation(const nn::QuantizableLayer& layer, const std::string& name) {
  const Quantizer& q = ReadyQuantizer(layer.input_quant, name, "input");
  const QuantSpec& spec = q.spec();
  auto [s, z] = q.Params();
  QUANTA_CHECK(s.numel() == 1, "convert: the input quantizer of ", name, " is not per tensor");
  double scale = static_cast<float>(s.item<float>());
  int64_t zp = static_cast<int64_t>(std::rint(z.item<float>()));
  if (spec.is_signed && !spec.symmetric) {
    // Note [Unsigned activations]: a signed affine range [qmin, qmax] with zero
    // point z holds the same real values as the unsigned [0, qmax - qmin] with
    // zero point z - qmin. oneDNN's int8 convolutions and matmuls multiply u8
    // sources by s8 weights (VNNI's vpdpbusd): an s8 source costs them a +128
    // shift of every value and a compensation term. And a ReLU's output (z =
    // qmin) then has zero point 0, which needs no zero-point pass and, read as a
    // residual, no zero-point term in the bias (a large one cost f32 epilogues
    // exactness at 4 bits). So activations are stored u8, as PyTorch's quint8
    // activations are: the integers move, the values do not.
    const int64_t lo = spec.quant_min(), hi = spec.quant_max();
    QuantParams p = QuantParams::PerTensor(scale, zp - lo);
    if (hi - lo != 255) p = p.WithRange(0, hi - lo);
    return {DType::kQUInt8, p, spec.bits};
  }
  DType dtype = spec.is_signed ? DType::kQInt8 : DType::kQUInt8;
  return {dtype, WithSpecRange(QuantParams::PerTensor(scale, zp), spec, dtype), spec.bits};
}

// The layer's input or weight quantizer when it is in a block format (Note
// [Block formats in policies] in quant/quantizer.h), else null.
const BlockQuantizer* BlockSlot(const std::shared_ptr<nn::Layer>& slot) {
  return dynamic_cast<const BlockQuantizer*>(slot.get());
}

// A block-format layer's node fields (Note [Block-format nodes]): the blocks of
// its weight w (the layer's shape), the folded batch norm's factor, the decoded
// weight.
void SetBlockWeight(IntegerNode& n, const BlockQuantizer& q, const Tensor& w, const std::vector<double>& factor) {
  QUANTA_CHECK(q.enabled(), "convert: the weight quantizer of ", n.name, " is disabled");
  n.block = q.format();
  n.weight_blocks = BlockQuantizeWeight(w.Detach(), q.format());
  if (!factor.empty()) n.weight_factor = Tensor::FromVector(std::vector<float>(factor.begin(), factor.end()),
                                                            {static_cast<int64_t>(factor.size())});
  n.weight = DecodeBlockWeight(n.kind, n.weight_blocks, n.weight_factor, w.shape());
  n.weight_bits = BlockElementBits(q.format());
}

// The layer's float weight (O, ...) as its weight quantizer quantizes it
// (Quantizer::Grid: per output channel along 0 or one scale, symmetric; APoT's
// codebook codes); then scaled per channel by `factor` (a folded batch norm's
// gamma / sigma; a negative factor flips the channel's integers, which the
// symmetric range allows). Codes within [-8, 7] are stored as qint4.
Tensor IntegerWeight(const std::shared_ptr<nn::Layer>& weight_quant, const std::string& name, const Tensor& w,
                     const std::vector<double>& factor, int* bits) {
  const Quantizer& q = ReadyQuantizer(weight_quant, name, "weight");
  const QuantSpec& spec = q.spec();
  QUANTA_CHECK(spec.symmetric, "convert: the weight quantizer of ", name, " is not symmetric (", spec.ToString(), ")");
  *bits = spec.bits;
  int64_t O = w.size(0);
  Quantizer::WeightGrid grid = q.Grid(w);
  QUANTA_CHECK(static_cast<int64_t>(grid.scales.size()) == O && grid.qmin == -grid.qmax && grid.qmax <= 127,
               "convert: ", name, " has ", grid.scales.size(), " weight scales for ", O, " output channels and codes in [",
               grid.qmin, ", ", grid.qmax, "]");
  std::vector<int32_t>& values = grid.codes;
  int64_t per = w.numel() / std::max<int64_t>(O, 1);
  std::vector<double> folded(O);
  for (int64_t o = 0; o < O; ++o) {
    double f = factor.empty() ? 1.0 : factor[o];
    folded[o] = static_cast<float>(grid.scales[o] * std::abs(f));
    if (folded[o] <= 0) folded[o] = std::numeric_limits<float>::min();  // a dead channel: all its integers are 0
    if (f < 0) {
      for (int64_t i = o * per; i < (o + 1) * per; ++i) values[i] = -values[i];
    }
  }
  DType dtype = grid.qmin >= -8 && grid.qmax <= 7 ? DType::kQInt4 : DType::kQInt8;
  QuantParams p = QuantParams::PerChannel(folded, std::vector<int64_t>(O, 0), 0);
  int64_t full_min = dtype == DType::kQInt4 ? -8 : -128, full_max = dtype == DType::kQInt4 ? 7 : 127;
  if (grid.qmin != full_min || grid.qmax != full_max) p = p.WithRange(grid.qmin, grid.qmax);
  return Tensor::FromQuantized(values, w.shape(), dtype, p);
}

// gamma / sigma and the bias a batch norm folds into the layer before it.
std::pair<std::vector<double>, Tensor> FoldBatchNorm(const nn::BatchNorm2d& bn, const Tensor& bias, int64_t O) {
  std::vector<float> mean = bn.running_mean.ToVector<float>(), var = bn.running_var.ToVector<float>();
  std::vector<float> gamma = bn.weight.defined() ? bn.weight.ToVector<float>() : std::vector<float>(O, 1.f);
  std::vector<float> beta = bn.bias.defined() ? bn.bias.ToVector<float>() : std::vector<float>(O, 0.f);
  std::vector<float> b = bias.defined() ? bias.ToVector<float>() : std::vector<float>(O, 0.f);
  std::vector<double> factor(O);
  std::vector<float> folded(O);
  for (int64_t o = 0; o < O; ++o) {
    factor[o] = gamma[o] / std::sqrt(static_cast<double>(var[o]) + bn.eps);
    folded[o] = static_cast<float>((b[o] - mean[o]) * factor[o] + beta[o]);
  }
  return {factor, Tensor::FromVector(folded, {O})};
}

}  // namespace

Tensor& WeightOf(nn::QuantizableLayer* layer) {
  if (auto* l = dynamic_cast<nn::Linear*>(layer)) return l->weight;
  auto* conv = dynamic_cast<nn::Conv2d*>(layer);
  QUANTA_CHECK(conv != nullptr, "WeightOf: a quantizable layer that is neither Conv2d nor Linear");
  return conv->weight;
}

IntegerBuilder::IntegerBuilder(Mode mode) : model_(std::make_shared<IntegerModel>()), mode_(mode) {}

int IntegerBuilder::PlanRead(const nn::QuantizableLayer& layer, const std::string& name, int in,
                             const nn::BatchNorm2d* bn, bool relu, bool residual, bool folded_in_training) {
  readers_.resize(model_->nodes().size());
  readers_[in].push_back(&layer);
  plan_.push_back({name, &layer, bn, relu, residual, folded_in_training});
  // An f32 placeholder: pooling, flattening and padding nodes can follow it.
  return model_->Add(IntegerNode{.kind = NodeKind::kDequantize, .name = name, .inputs = {in}});
}

namespace {

// The float weight (O, ...) scaled per output channel by factor (empty: 1).
Tensor FoldedFloatWeight(const Tensor& w, const std::vector<double>& factor) {
  if (factor.empty()) return w.Detach().Clone();
  std::vector<float> f(factor.begin(), factor.end());
  Shape shape(w.dim(), 1);
  shape[0] = w.size(0);
  return Mul(w.Detach(), Tensor::FromVector(f, shape)).Contiguous();
}

}  // namespace

int IntegerBuilder::QuantizedInput(int in, const nn::QuantizableLayer& layer, const std::string& name) {
  if (const BlockQuantizer* b = BlockSlot(layer.input_quant)) {
    // Note [Block-format nodes]: the value block-quantized once; every reader
    // (a shared input quantizer's layers, a residual add) reads that node.
    QUANTA_CHECK(b->enabled(), "convert: the input quantizer of ", name, " is disabled");
    const IntegerNode& src = model_->node(in);
    if (src.kind == NodeKind::kQuantize && src.block == b->format()) return in;
    if (auto it = block_quantized_.find(in); it != block_quantized_.end()) return it->second;
    QUANTA_CHECK(src.out_dtype == DType::kF32, "convert: ", name, " reads node ", in, " (", src.name,
                 "), already quantized for an integer layer; its readers must share one input quantizer");
    int q = model_->Add(IntegerNode{.kind = NodeKind::kQuantize, .name = name + ".input_quant", .inputs = {in},
                                    .block = b->format()});
    block_quantized_[in] = q;
    return q;
  }
  Activation a = InputActivation(layer, name);
  const IntegerNode& src = model_->node(in);
  const QuantParams &p = src.out_params, &q = a.params;
  bool same = src.out_dtype == a.dtype && p.zero_points == q.zero_points && p.quant_min == q.quant_min &&
              p.quant_max == q.quant_max && p.scales == q.scales;
  if (same) return in;
  // A value already quantized with other parameters: training quantized it
  // once, so requantizing here would compute something training never did.
  // PrepareQat gives every value one quantizer (Note [Quantization plan]).
  QUANTA_CHECK(src.out_dtype == DType::kF32, "convert: ", name, " reads node ", in, " (", src.name,
               "), already quantized for another layer with other parameters; its readers must share one input "
               "quantizer (PrepareQat does this; Note [Quantization plan] in quant/convert.h)");
  return model_->Add(IntegerNode{.kind = NodeKind::kQuantize, .name = name + ".input_quant", .inputs = {in},
                                 .out_dtype = a.dtype, .out_params = a.params});
}

int IntegerBuilder::AddWeighted(IntegerNode node, const nn::QuantizableLayer& layer, int in,
                                const nn::QuantizableLayer* consumer) {
  if (mode_ == Mode::kFloat) {
    node.inputs = {Dequantize(in)};
    node.weight_bits = node.act_bits = 32;
    return model_->Add(std::move(node));
  }
  node.inputs = {QuantizedInput(in, layer, node.name)};
  const BlockQuantizer* block_in = BlockSlot(layer.input_quant);
  node.act_bits = block_in ? BlockElementBits(block_in->format()) : InputActivation(layer, node.name).bits;
  // A residual that readers saw block-quantized is added so (the shortcut adds
  // the quantized block input, Note [One quantized value, several readers]).
  if (auto it = block_quantized_.find(node.residual); node.residual >= 0 && it != block_quantized_.end()) {
    node.residual = it->second;
  }
  // A consumer in a block format reads f32 and quantizes it itself.
  if (consumer && !BlockSlot(consumer->input_quant)) {
    Activation out = InputActivation(*consumer, absl::StrCat(node.name, "'s consumer"));
    node.out_dtype = out.dtype;
    node.out_params = out.params;
  }
  return model_->Add(std::move(node));
}

int IntegerBuilder::Conv(const std::string& name, const nn::Conv2d& conv, const nn::BatchNorm2d* bn, int in, bool relu,
                         const nn::QuantizableLayer* consumer, int residual) {
  if (mode_ == Mode::kPlan) return PlanRead(conv, name, in, bn, relu, residual >= 0);
  NoGradGuard no_grad;
  int64_t O = conv.weight.size(0);
  IntegerNode n{.kind = NodeKind::kConv2d, .name = name, .conv = conv.options, .relu = relu, .residual = residual};
  std::vector<double> factor;
  // The model's tensors are copied, never shared: the integer model is a snapshot.
  n.bias = conv.bias.defined() ? conv.bias.Detach().Clone() : Tensor();
  if (bn) {
    QUANTA_CHECK(bn->running_mean.numel() == O, "convert: ", name, " has ", O, " channels, its batch norm ",
                 bn->running_mean.numel());
    std::tie(factor, n.bias) = FoldBatchNorm(*bn, conv.bias, O);
  }
  if (const BlockQuantizer* b = float_weights() ? nullptr : BlockSlot(conv.weight_quant)) {
    SetBlockWeight(n, *b, conv.weight, factor);
  } else {
    n.weight = float_weights() ? FoldedFloatWeight(conv.weight, factor)
                               : IntegerWeight(conv.weight_quant, name, conv.weight, factor, &n.weight_bits);
  }
  return AddWeighted(std::move(n), conv, in, consumer);
}

int IntegerBuilder::Conv(const std::string& name, const ConvBn2d& cb, int in, bool relu,
                         const nn::QuantizableLayer* consumer, int residual) {
  if (mode_ == Mode::kPlan) return PlanRead(*cb.conv, name, in, cb.bn.get(), relu, residual >= 0, true);
  NoGradGuard no_grad;
  auto [w, b] = cb.FoldedWeightAndBias();
  IntegerNode n{.kind = NodeKind::kConv2d, .name = name, .conv = cb.conv->options, .relu = relu, .residual = residual};
  n.bias = b.Contiguous();
  // ConvBn2d's own weight quantizer (on the folded weight) when set, else conv's.
  const std::shared_ptr<nn::Layer>& wq = cb.weight_quant ? cb.weight_quant : cb.conv->weight_quant;
  if (const BlockQuantizer* b = float_weights() ? nullptr : BlockSlot(wq)) {
    SetBlockWeight(n, *b, w, {});
  } else {
    n.weight = float_weights() ? FoldedFloatWeight(w, {}) : IntegerWeight(wq, name, w, {}, &n.weight_bits);
  }
  return AddWeighted(std::move(n), *cb.conv, in, consumer);
}

int IntegerBuilder::Linear(const std::string& name, const nn::Linear& linear, int in, bool relu,
                           const nn::QuantizableLayer* consumer, int residual) {
  if (mode_ == Mode::kPlan) return PlanRead(linear, name, in, nullptr, relu, residual >= 0);
  NoGradGuard no_grad;
  IntegerNode n{.kind = NodeKind::kLinear, .name = name, .relu = relu, .residual = residual};
  n.bias = linear.bias.defined() ? linear.bias.Detach().Clone() : Tensor();
  if (float_weights()) {
    n.weight = linear.weight.Detach().Transpose(0, 1).Clone();  // (K, N), a copy
    return AddWeighted(std::move(n), linear, in, consumer);
  }
  if (const BlockQuantizer* b = BlockSlot(linear.weight_quant)) {
    SetBlockWeight(n, *b, linear.weight, {});
    return AddWeighted(std::move(n), linear, in, consumer);
  }
  Tensor w = IntegerWeight(linear.weight_quant, name, linear.weight, {}, &n.weight_bits);  // (N, K) per channel along 0
  // The matmul reads (K, N) with scales along 1.
  int64_t N = w.size(0), K = w.size(1);
  std::vector<int32_t> v = w.IntRepr(), t(v.size());
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t k = 0; k < K; ++k) t[k * N + i] = v[i * K + k];
  }
  QuantParams p = w.qparams();
  p.axis = 1;
  n.weight = Tensor::FromQuantized(t, {K, N}, w.dtype(), p);
  return AddWeighted(std::move(n), linear, in, consumer);
}

int IntegerBuilder::MaxPool(int in, const Pool2dOptions& options) {
  const IntegerNode& src = model_->node(in);
  return model_->Add(IntegerNode{.kind = NodeKind::kMaxPool2d, .name = src.name + ".max_pool", .inputs = {in},
                                 .out_dtype = src.out_dtype, .out_params = src.out_params, .pool = options});
}

int IntegerBuilder::GlobalAvgPool(int in) {
  return model_->Add(IntegerNode{.kind = NodeKind::kGlobalAvgPool, .name = model_->node(in).name + ".avg_pool", .inputs = {in}});
}

int IntegerBuilder::Flatten(int in) {
  const IntegerNode& src = model_->node(in);
  return model_->Add(IntegerNode{.kind = NodeKind::kFlatten, .name = src.name + ".flatten", .inputs = {in},
                                 .out_dtype = src.out_dtype, .out_params = src.out_params});
}

int IntegerBuilder::ShortcutPad(int in, int64_t stride, int64_t pad_before, int64_t pad_after) {
  return model_->Add(IntegerNode{.kind = NodeKind::kShortcutPad, .name = model_->node(in).name + ".shortcut",
                                 .inputs = {in}, .stride = stride, .pad_before = pad_before, .pad_after = pad_after});
}

int IntegerBuilder::Dequantize(int in) {
  if (model_->node(in).out_dtype == DType::kF32) return in;
  return model_->Add(IntegerNode{.kind = NodeKind::kDequantize, .name = model_->node(in).name + ".dequant", .inputs = {in}});
}

namespace {

// A Sequential's layers in order, nested Sequentials flattened, with names.
void Flatten(nn::Module& m, const std::string& prefix,
             std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>>& out) {
  for (auto& [name, child] : m.NamedChildren()) {
    std::string full = prefix.empty() ? name : prefix + "." + name;
    if (auto* seq = dynamic_cast<nn::Sequential*>(child.get())) {
      Flatten(*seq, full, out);
    } else {
      out.emplace_back(full, child);
    }
  }
}

bool Transparent(const nn::Module* m) {
  // Layers an integer value passes through unchanged in meaning.
  return dynamic_cast<const nn::Identity*>(m) || dynamic_cast<const nn::Dropout*>(m) ||
         dynamic_cast<const nn::Flatten*>(m) || dynamic_cast<const nn::MaxPool2d*>(m);
}

const nn::QuantizableLayer* AsQuantizable(const nn::Module* m) {
  if (auto* cb = dynamic_cast<const ConvBn2d*>(m)) return cb->conv.get();
  return dynamic_cast<const nn::QuantizableLayer*>(m);
}

void ConvertSequential(IntegerBuilder& b, nn::Sequential& seq) {
  std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> layers;
  Flatten(seq, "", layers);
  int cur = b.input();
  for (size_t i = 0; i < layers.size(); ++i) {
    auto& [name, m] = layers[i];
    const nn::Module* layer = m.get();
    if (Transparent(layer) && !dynamic_cast<const nn::MaxPool2d*>(layer) && !dynamic_cast<const nn::Flatten*>(layer)) {
      continue;
    }
    if (auto* pool = dynamic_cast<const nn::MaxPool2d*>(layer)) {
      cur = b.MaxPool(cur, pool->options);
      continue;
    }
    if (auto* flat = dynamic_cast<const nn::Flatten*>(layer)) {
      QUANTA_CHECK(flat->start_dim == 1 && (flat->end_dim == -1 || flat->end_dim == 3), "convert: ", name,
                   ": only Flatten from dim 1 to the end has an integer form");
      cur = b.Flatten(cur);
      continue;
    }
    if (auto* ap = dynamic_cast<const nn::AdaptiveAvgPool2d*>(layer)) {
      QUANTA_CHECK(ap->out_h == 1 && ap->out_w == 1, "convert: ", name, ": only AdaptiveAvgPool2d(1, 1) is converted");
      cur = b.GlobalAvgPool(cur);
      continue;
    }
    const nn::QuantizableLayer* q = AsQuantizable(layer);
    QUANTA_CHECK(q != nullptr, "convert: ", name, " (", typeid(*layer).name(),
                 ") has no integer form; a ReLU or BatchNorm2d converts only right after a Conv2d or Linear");
    // Fold what follows: BatchNorm2d (after a Conv2d), then ReLU.
    size_t j = i + 1;
    const nn::BatchNorm2d* bn = nullptr;
    if (j < layers.size() && dynamic_cast<const nn::Conv2d*>(layer)) {
      bn = dynamic_cast<const nn::BatchNorm2d*>(layers[j].second.get());
      if (bn) ++j;
    }
    bool relu = j < layers.size() && dynamic_cast<const nn::ReLU*>(layers[j].second.get());
    if (relu) ++j;
    // The consumer: the next quantizable layer, if only transparent layers lie between.
    size_t k = j;
    while (k < layers.size() && Transparent(layers[k].second.get())) ++k;
    const nn::QuantizableLayer* consumer = k < layers.size() ? AsQuantizable(layers[k].second.get()) : nullptr;
    if (auto* cb = dynamic_cast<const ConvBn2d*>(layer)) {
      cur = b.Conv(name, *cb, cur, relu, consumer);
    } else if (auto* conv = dynamic_cast<const nn::Conv2d*>(layer)) {
      cur = b.Conv(name, *conv, bn, cur, relu, consumer);
    } else {
      cur = b.Linear(name, *dynamic_cast<const nn::Linear*>(layer), cur, relu, consumer);
    }
    i = j - 1;
  }
  b.Dequantize(cur);
}

}  // namespace

namespace {

std::shared_ptr<IntegerModel> ConvertWith(nn::Module& model, IntegerBuilder& builder) {
  if (auto* c = dynamic_cast<Convertible*>(&model)) {
    c->ConvertTo(builder);
  } else if (auto* seq = dynamic_cast<nn::Sequential*>(&model)) {
    ConvertSequential(builder, *seq);
  } else {
    throw Error(absl::StrCat("convert: ", typeid(model).name(),
                             " is neither a Sequential nor Convertible (quant/convert.h says how to make it so)"));
  }
  auto m = builder.model();
  QUANTA_CHECK(m->nodes().size() > 1, "convert: the model produced no integer nodes");
  QUANTA_CHECK(m->nodes().back().out_dtype == DType::kF32, "convert: the model's output must be f32 (dequantize it)");
  return m;
}

}  // namespace

std::shared_ptr<IntegerModel> Convert(nn::Module& model) {
  IntegerBuilder builder(IntegerBuilder::Mode::kInteger);
  return ConvertWith(model, builder);
}

std::shared_ptr<IntegerModel> ConvertFloat(nn::Module& model) {
  IntegerBuilder builder(IntegerBuilder::Mode::kFloat);
  return ConvertWith(model, builder);
}

namespace {

// The integer form run in kPlan mode; false when the model has none (a
// Sequential with a GELU, say: Convert will say what is missing if called).
bool RunPlan(nn::Module& model, IntegerBuilder& builder) {
  if (!dynamic_cast<Convertible*>(&model) && !dynamic_cast<nn::Sequential*>(&model)) return false;
  try {
    ConvertWith(model, builder);
  } catch (const Error&) {
    return false;
  }
  return true;
}

// The model's own (mutable) module behind a pointer the const integer form holds.
template <typename T>
T* Mutable(nn::Module& model, const T* m) {
  if (m == nullptr) return nullptr;
  for (auto& [name, module] : model.NamedModules()) {
    if (module == m) return dynamic_cast<T*>(module);
  }
  QUANTA_CHECK(false, "plan: a layer of the integer form is not a module of the model");
  return nullptr;
}

}  // namespace

std::vector<std::vector<nn::QuantizableLayer*>> PlanSharedInputs(nn::Module& model) {
  IntegerBuilder builder(IntegerBuilder::Mode::kPlan);
  if (!RunPlan(model, builder)) return {};
  std::vector<std::vector<nn::QuantizableLayer*>> groups;
  for (const auto& readers : builder.readers_) {
    if (readers.size() < 2) continue;
    std::vector<nn::QuantizableLayer*> group;
    for (const nn::QuantizableLayer* r : readers) group.push_back(Mutable(model, r));
    groups.push_back(std::move(group));
  }
  return groups;
}

std::vector<PlannedLayer> PlanLayers(nn::Module& model) {
  IntegerBuilder builder(IntegerBuilder::Mode::kPlan);
  if (!RunPlan(model, builder)) return {};
  std::vector<PlannedLayer> layers;
  for (const auto& r : builder.plan_) {
    layers.push_back({r.name, Mutable(model, r.layer), Mutable(model, r.bn), r.relu, r.residual, r.folded_in_training});
  }
  return layers;
}

}  // namespace quanta::quant

// BERT: embeddings, post-LN encoder layers, pooler, heads; the Hugging Face
// name mapping; the swap of Linear layers for int8 ones (quant::IntegerLinear).
#include "models/bert.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "nn/functional.h"
#include "nn/safetensors.h"
#include "quant/integer_linear.h"

namespace quanta::models {

BertConfig BertConfig::Named(const std::string& name, int64_t vocab) {
  if (name == "tiny") return Tiny(vocab);
  if (name == "mini") return Mini(vocab);
  if (name == "small") return Small(vocab);
  if (name == "base") return Base(vocab);
  if (name == "minilm") return MiniLm(vocab);
  throw Error("bert: unknown configuration '" + name + "' (tiny, mini, small, base, minilm)");
}

namespace {

std::shared_ptr<nn::Linear> MakeLinear(int64_t in, int64_t out, Generator* gen) {
  // BERT's initialization: N(0, 0.02) weights, zero biases.
  auto l = std::make_shared<nn::Linear>(in, out, true, gen);
  NoGradGuard no_grad;
  l->weight.CopyFrom(Normal(l->weight.shape(), 0, 0.02, gen));
  FillInplace(l->bias, 0);
  return l;
}

// Registers a dotted path of containers ("attention.self") under parent and
// returns the innermost; the BERT classes below only hold the layers, the
// containers give them their Hugging Face names.
nn::Module& Path(nn::Module& parent, std::vector<std::shared_ptr<nn::Module>>& keep, const std::string& dotted) {
  nn::Module* m = &parent;
  for (const std::string& part : std::vector<std::string>(absl::StrSplit(dotted, '.'))) {
    auto child = std::make_shared<nn::Module>();
    m->RegisterModule(part, child);
    keep.push_back(child);
    m = child.get();
  }
  return *m;
}

// Swaps a (prepared) Linear for its int8 form, under the same name.
void Swap(nn::Module& parent, const std::string& name, std::shared_ptr<nn::Layer>& slot, const IntegerOptions& o) {
  auto* linear = dynamic_cast<nn::Linear*>(slot.get());
  if (linear == nullptr) return;  // already converted
  slot = quant::IntegerLinear::From(*linear, {.dynamic = o.dynamic, .dynamic_bits = o.dynamic_bits});
  parent.ReplaceModule(name, slot);
}

}  // namespace

// One post-LN transformer block, Hugging Face's BertLayer.
class BertEncoderLayer : public nn::Module {
 public:
  BertEncoderLayer(const BertConfig& c, Generator* gen) : config_(c), gen_(gen) {
    nn::Module& self = Path(*this, keep_, "attention.self");
    query = self.RegisterModule("query", std::shared_ptr<nn::Layer>(MakeLinear(c.hidden, c.hidden, gen)));
    key = self.RegisterModule("key", std::shared_ptr<nn::Layer>(MakeLinear(c.hidden, c.hidden, gen)));
    value = self.RegisterModule("value", std::shared_ptr<nn::Layer>(MakeLinear(c.hidden, c.hidden, gen)));
    nn::Module& attn_out = Path(*keep_[0], keep_, "output");
    attention_dense = attn_out.RegisterModule("dense", std::shared_ptr<nn::Layer>(MakeLinear(c.hidden, c.hidden, gen)));
    attention_norm = attn_out.RegisterModule("LayerNorm", std::make_shared<nn::LayerNorm>(Shape{c.hidden}, c.layer_norm_eps));
    nn::Module& inter = Path(*this, keep_, "intermediate");
    intermediate = inter.RegisterModule("dense", std::shared_ptr<nn::Layer>(MakeLinear(c.hidden, c.intermediate, gen)));
    nn::Module& out = Path(*this, keep_, "output");
    output_dense = out.RegisterModule("dense", std::shared_ptr<nn::Layer>(MakeLinear(c.intermediate, c.hidden, gen)));
    output_norm = out.RegisterModule("LayerNorm", std::make_shared<nn::LayerNorm>(Shape{c.hidden}, c.layer_norm_eps));
  }

  // x (B, T, hidden), additive mask (B, 1, 1, T): 0 for tokens, -10000 for padding (BERT's), or undefined.
  Tensor Forward(const Tensor& x, const Tensor& mask) {
    int64_t B = x.size(0), T = x.size(1), H = config_.heads, D = config_.hidden / H;
    // Converted query, key and value with one input quantizer's parameters
    // quantize x once (IntegerLinear::QuantizeInput).
    Tensor input = x;
    auto* iq = dynamic_cast<quant::IntegerLinear*>(query.get());
    auto* ik = dynamic_cast<quant::IntegerLinear*>(key.get());
    auto* iv = dynamic_cast<quant::IntegerLinear*>(value.get());
    if (iq && ik && iv && iq->SameInputAs(*ik) && iq->SameInputAs(*iv)) input = iq->QuantizeInput(x);
    auto heads = [&](std::shared_ptr<nn::Layer>& l) { return l->Forward(input).View({B, T, H, D}).Transpose(1, 2); };
    Tensor q = heads(query), k = heads(key), v = heads(value);  // (B, H, T, D)
    // The 1/sqrt(D) scale on q, (B, H, T, D), rather than on the (B, H, T, T)
    // scores: the same products (exact for D a power of 4), half the work at T = 2D.
    Tensor scores = Matmul(Mul(q, 1.0 / std::sqrt(static_cast<double>(D))), k.Transpose(-2, -1));
    if (mask.defined()) scores = Add(scores, mask);
    Tensor probs = quanta::Dropout(Softmax(scores, -1), config_.dropout, is_training(), gen_);
    Tensor context = Matmul(probs, v).Transpose(1, 2).Reshape({B, T, config_.hidden});
    Tensor a = attention_norm->Forward(
        Add(quanta::Dropout(attention_dense->Forward(context), config_.dropout, is_training(), gen_), x));
    auto* fused = dynamic_cast<quant::IntegerLinear*>(intermediate.get());
    Tensor h = fused && fused->gelu ? intermediate->Forward(a) : Gelu(intermediate->Forward(a));  // Note [GELU into the next quantizer]
    return output_norm->Forward(Add(quanta::Dropout(output_dense->Forward(h), config_.dropout, is_training(), gen_), a));
  }

  void ToInteger(const IntegerOptions& o) {
    nn::Module& self = *keep_[1];  // attention.self
    Swap(self, "query", query, o);
    Swap(self, "key", key, o);
    Swap(self, "value", value, o);
    Swap(*keep_[2], "dense", attention_dense, o);  // attention.output
    Swap(*keep_[3], "dense", intermediate, o);
    Swap(*keep_[4], "dense", output_dense, o);
    if (!o.dynamic) {  // Note [GELU into the next quantizer] in quant/integer_linear.cc
      auto* first = dynamic_cast<quant::IntegerLinear*>(intermediate.get());
      auto* second = dynamic_cast<quant::IntegerLinear*>(output_dense.get());
      if (first && second && !first->gelu) first->FuseGeluAndQuantize(second->input_dtype, second->input_params);
    }
  }

  std::shared_ptr<nn::Layer> query, key, value, attention_dense, intermediate, output_dense;
  std::shared_ptr<nn::LayerNorm> attention_norm, output_norm;

 private:
  BertConfig config_;
  Generator* gen_;
  // attention, attention.self, attention.output, intermediate, output.
  std::vector<std::shared_ptr<nn::Module>> keep_;
};

BertModel::BertModel(const BertConfig& c, Generator* gen) : config(c), gen_(gen) {
  QUANTA_CHECK(c.hidden % c.heads == 0 && c.layers >= 1 && c.vocab_size >= 1, "bert: hidden ", c.hidden,
               " must be divisible by heads ", c.heads, " (layers ", c.layers, ", vocab ", c.vocab_size, ")");
  auto embeddings = RegisterModule("embeddings", std::make_shared<nn::Module>());
  auto embedding = [&](const char* name, int64_t n) {
    auto e = std::make_shared<nn::Embedding>(n, c.hidden, gen);
    NoGradGuard no_grad;
    e->weight.CopyFrom(Normal(e->weight.shape(), 0, 0.02, gen));
    return std::shared_ptr<nn::Layer>(embeddings->RegisterModule(name, e));
  };
  word_embeddings = embedding("word_embeddings", c.vocab_size);
  position_embeddings = embedding("position_embeddings", c.max_positions);
  token_type_embeddings = embedding("token_type_embeddings", c.type_vocab);
  embeddings_ = embeddings;
  embeddings_norm = embeddings->RegisterModule("LayerNorm", std::make_shared<nn::LayerNorm>(Shape{c.hidden}, c.layer_norm_eps));
  auto encoder = RegisterModule("encoder", std::make_shared<nn::Module>());
  auto layer = encoder->RegisterModule("layer", std::make_shared<nn::Module>());
  for (int64_t i = 0; i < c.layers; ++i) {
    layers.push_back(layer->RegisterModule(std::to_string(i), std::make_shared<BertEncoderLayer>(c, gen)));
  }
  auto pool = RegisterModule("pooler", std::make_shared<nn::Module>());
  pooler = pool->RegisterModule("dense", std::shared_ptr<nn::Layer>(MakeLinear(c.hidden, c.hidden, gen)));
  pooler_parent_ = pool;
}

std::pair<Tensor, Tensor> BertModel::Forward(const BertInput& in) {
  QUANTA_CHECK(in.ids.dim() == 2 && in.ids.dtype() == DType::kI64, "bert: ids must be i64 (B, T), got ", in.ids.Describe());
  int64_t B = in.ids.size(0), T = in.ids.size(1);
  QUANTA_CHECK(T <= config.max_positions, "bert: sequence length ", T, " above max_positions ", config.max_positions);
  Tensor type_ids = in.type_ids.defined() ? in.type_ids : Zeros({B, T}, DType::kI64, in.ids.device());
  Tensor mask = in.mask.defined() ? in.mask : Ones({B, T}, DType::kI64, in.ids.device());
  QUANTA_CHECK(type_ids.shape() == in.ids.shape() && mask.shape() == in.ids.shape(), "bert: type_ids ",
               type_ids.Describe(), " and mask ", mask.Describe(), " must match ids ", in.ids.Describe());
  Tensor positions = Arange(0, T, 1, DType::kI64, in.ids.device()).View({1, T}).Expand({B, T});
  Tensor x = Add(Add(word_embeddings->Forward(in.ids), position_embeddings->Forward(positions)),
                 token_type_embeddings->Forward(type_ids));
  x = quanta::Dropout(embeddings_norm->Forward(x), config.dropout, is_training(), gen_);
  // BERT's extended mask: (1 - mask) * -10000, broadcast over heads and queries;
  // none without a mask (no padding: adding zeros would change nothing).
  Tensor additive;
  if (in.mask.defined()) {
    additive = Mul(Sub(Scalar(1, x.dtype(), x.device()), mask.To(x.dtype())), -10000.0).View({B, 1, 1, T});
  }
  for (auto& l : layers) x = l->Forward(x, additive);
  Tensor pooled = Tanh(pooler->Forward(x.Select(1, 0)));
  return {x, pooled};
}

void BertModel::ToInteger(const IntegerOptions& o) {
  for (auto& l : layers) l->ToInteger(o);
  Swap(*pooler_parent_, "dense", pooler, o);
  // Embedding tables as int8 rows (8-bit per row, as PrepareQat quantizes them).
  for (auto [name, slot] : {std::pair{"word_embeddings", &word_embeddings}, {"position_embeddings", &position_embeddings},
                            {"token_type_embeddings", &token_type_embeddings}}) {
    if (auto* e = dynamic_cast<nn::Embedding*>(slot->get())) {
      *slot = quant::IntegerEmbedding::From(*e);
      embeddings_->ReplaceModule(name, *slot);
    }
  }
}

BertForSequenceClassification::BertForSequenceClassification(const BertConfig& c, int64_t labels, Generator* gen)
    : gen_(gen) {
  bert = RegisterModule("bert", std::make_shared<BertModel>(c, gen));
  classifier = RegisterModule("classifier", std::shared_ptr<nn::Layer>(MakeLinear(c.hidden, labels, gen)));
}

Tensor BertForSequenceClassification::Forward(const BertInput& in) {
  Tensor pooled = bert->Forward(in).second;
  return classifier->Forward(quanta::Dropout(pooled, bert->config.dropout, is_training(), gen_));
}

void BertForSequenceClassification::ToInteger(const IntegerOptions& o) {
  bert->ToInteger(o);
  Swap(*this, "classifier", classifier, o);
}

BertForTokenClassification::BertForTokenClassification(const BertConfig& c, int64_t labels, Generator* gen) : gen_(gen) {
  bert = RegisterModule("bert", std::make_shared<BertModel>(c, gen));
  classifier = RegisterModule("classifier", std::shared_ptr<nn::Layer>(MakeLinear(c.hidden, labels, gen)));
}

Tensor BertForTokenClassification::Forward(const BertInput& in) {
  Tensor seq = bert->Forward(in).first;
  return classifier->Forward(quanta::Dropout(seq, bert->config.dropout, is_training(), gen_));
}

void BertForTokenClassification::ToInteger(const IntegerOptions& o) {
  bert->ToInteger(o);
  Swap(*this, "classifier", classifier, o);
}

absl::StatusOr<std::vector<std::string>> LoadHuggingFace(const std::string& path, nn::Module& model) {
  absl::StatusOr<Safetensors> file = LoadSafetensors(path);
  if (!file.ok()) return file.status();
  bool wants_prefix = false;
  for (auto& [name, p] : model.NamedParameters()) wants_prefix = wants_prefix || absl::StartsWith(name, "bert.");
  // The file's names in the model's spelling.
  std::map<std::string, std::string> renamed;  // model name -> file name
  std::vector<std::string> ignored;
  for (const auto& [name, tensor] : file->tensors) {
    std::string n = name;
    if (absl::EndsWith(n, ".gamma")) n = n.substr(0, n.size() - 6) + ".weight";
    if (absl::EndsWith(n, ".beta")) n = n.substr(0, n.size() - 5) + ".bias";
    bool has_prefix = absl::StartsWith(n, "bert.");
    if (wants_prefix && !has_prefix && !absl::StartsWith(n, "classifier.")) n = "bert." + n;
    if (!wants_prefix && has_prefix) n = n.substr(5);
    renamed[n] = name;
  }
  TensorMap state;
  std::vector<std::string> missing, mismatched;
  std::map<std::string, bool> used;
  for (auto& [name, p] : model.NamedParameters()) {
    auto it = renamed.find(name);
    if (it == renamed.end()) {
      missing.push_back(name);
      continue;
    }
    const Tensor& t = file->tensors.at(it->second);
    used[it->second] = true;
    if (t.shape() != p->shape()) {
      mismatched.push_back(absl::StrCat(it->second, " is ", ShapeToString(t.shape()), ", ", name, " needs ",
                                        ShapeToString(p->shape())));
      continue;
    }
    state[name] = t.To(p->dtype());
  }
  if (!missing.empty() || !mismatched.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bert: ", path, ": ", missing.empty() ? "" : "missing " + absl::StrJoin(missing, ", "),
        missing.empty() || mismatched.empty() ? "" : "; ", mismatched.empty() ? "" : absl::StrJoin(mismatched, "; ")));
  }
  for (const auto& [name, tensor] : file->tensors) {
    if (!used.count(name)) ignored.push_back(name);
  }
  absl::Status st = model.LoadStateDict(state, /*strict=*/false);
  if (!st.ok()) return st;
  return ignored;
}

}  // namespace quanta::models

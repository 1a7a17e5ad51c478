// Deployment files from the command line, on Fashion-MNIST (Debian's package):
// a small QAT run writes its integer model, //apps:inspect says what it and the
// checkpoint hold, //apps:export (and train --export_onnx) write ONNX that
// ONNX's checker accepts, and every wrong input gets an error naming the file.
// Also: train's epoch lines reach a file while it is still running.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/apps/run_app.h"
#include "quant/onnx_export.h"

namespace {

using quanta::testing::Read;
using quanta::testing::RunCommand;
using quanta::testing::Tmp;

void ExpectHas(const std::string& text, const std::string& what) {
  EXPECT_NE(text.find(what), std::string::npos) << "missing \"" << what << "\" in:\n" << text;
}

// One QAT W4A4 run (first and last layers 8-bit) with its files, shared by the tests.
const std::string& RunDir() {
  static const std::string* dir = [] {
    auto* d = new std::string(Tmp() + "/qat");
    std::string out;
    int rc = RunCommand("apps/train --dataset=fashion_mnist --train_subset=256 --test_subset=128 --epochs=1 --workers=1 "
                        "--quant=qat --wbits=4 --abits=4 --checkpoint_dir=" + *d + " --export_onnx=" + *d + "/train.onnx --report",
                        &out);
    EXPECT_EQ(rc, 0) << out;
    std::ofstream(*d + "/train.log") << out;
    return d;
  }();
  return *dir;
}

TEST(Deploy, InspectShowsTheIntegerModelAndTheCheckpoint) {
  std::string out;
  ASSERT_EQ(RunCommand("apps/inspect " + RunDir() + "/model.int.safetensors", &out), 0) << out;
  ExpectHas(out, "a Quanta integer model, 14 nodes");
  ExpectHas(out, "command: bazel run //apps:train -- --dataset=fashion_mnist");
  ExpectHas(out, "input_shape: 1,1,28,28");
  ExpectHas(out, "conv1                      W8A8   qint8[32,1,3,3]");
  ExpectHas(out, "layer1.0.conv1             W4A4   qint4[32,32,3,3]");
  ExpectHas(out, "fc                         W8A8   qint8[128,10]");
  // fmnist_resnet8: 7 convolutions and 1 linear layer inside, 1 conv and 1 linear at the ends.
  ExpectHas(out, "weighted layers: 8 at 4 bits, 2 at 8 bits");
  ASSERT_EQ(RunCommand("apps/inspect " + RunDir() + "/last.safetensors", &out), 0) << out;
  ExpectHas(out, "a Quanta training checkpoint");
  ExpectHas(out, "epoch: 1");
  ExpectHas(out, "model.conv1.weight                                       f32    [32, 1, 3, 3]");
  ExpectHas(out, "model.layer1.0.conv1.input_quant.observer.min_val");
}

// --report: the per-layer table after QAT and its JSON in the checkpoint folder.
TEST(Deploy, TrainReportsEveryLayer) {
  std::string log = Read(RunDir() + "/train.log"), json = Read(RunDir() + "/report.json");
  ExpectHas(log, "quantization report (inputs: 2 training batches, unaugmented)");
  ExpectHas(log, "layer1.0.conv1           W4A4");
  ExpectHas(log, "fc                       W8A8");
  // The downsample reads the block input conv1 quantized (Note [Quantization plan]).
  ExpectHas(log, "(reads layer2.0.conv1's quantized input)");
  ExpectHas(json, "{\"name\": \"conv1\", \"weight_bits\": 8, \"act_bits\": 8");
  ExpectHas(json, "\"shared_input_with\": \"layer3.0.conv1\"");
  EXPECT_EQ(std::count(json.begin(), json.end(), '\n'), 12) << json;  // 10 layers, the brackets
}

TEST(Deploy, ExportWritesOnnxTheCheckerAccepts) {
  std::string onnx = Tmp() + "/exported.onnx", out;
  ASSERT_EQ(RunCommand("apps/export --model=" + RunDir() + "/model.int.safetensors --onnx=" + onnx, &out), 0) << out;
  ExpectHas(out, "wrote " + onnx);
  std::string bytes = Read(onnx);
  ASSERT_FALSE(bytes.empty());
  absl::Status checked = quanta::quant::CheckOnnx(bytes);
  EXPECT_TRUE(checked.ok()) << checked;
  // The same model, with its shape given, and the file train --export_onnx wrote.
  ASSERT_EQ(RunCommand("apps/export --model=" + RunDir() + "/model.int.safetensors --onnx=" + onnx +
                           " --input_shape=8,1,28,28", &out),
            0)
      << out;
  EXPECT_TRUE(quanta::quant::CheckOnnx(Read(onnx)).ok());
  std::string from_train = Read(RunDir() + "/train.onnx");
  ASSERT_FALSE(from_train.empty());
  EXPECT_TRUE(quanta::quant::CheckOnnx(from_train).ok());
}

TEST(Deploy, WrongInputsNameTheFileAndTheProblem) {
  std::string out, junk = Tmp() + "/junk.safetensors";
  std::ofstream(junk) << "this is not a model";
  EXPECT_EQ(RunCommand("apps/inspect " + junk, &out), 1);
  ExpectHas(out, junk);
  EXPECT_EQ(RunCommand("apps/inspect " + Tmp() + "/absent.safetensors", &out), 1);
  ExpectHas(out, Tmp() + "/absent.safetensors: no such file");
  EXPECT_EQ(RunCommand("apps/inspect", &out), 2);
  ExpectHas(out, "usage: inspect FILE");
  EXPECT_EQ(RunCommand("apps/export --model=" + RunDir() + "/last.safetensors --onnx=" + Tmp() + "/x.onnx", &out), 1);
  ExpectHas(out, RunDir() + "/last.safetensors is a checkpoint, not an integer model");
  EXPECT_EQ(RunCommand("apps/export --model=" + junk + " --onnx=" + Tmp() + "/x.onnx", &out), 1);
  ExpectHas(out, junk);
  EXPECT_EQ(RunCommand("apps/export --model=" + RunDir() + "/model.int.safetensors --onnx=" + Tmp() +
                           "/x.onnx --input_shape=1,x,28",
                       &out),
            2);
  ExpectHas(out, "shape '1,x,28'");
  EXPECT_EQ(RunCommand("apps/export --onnx=" + Tmp() + "/x.onnx", &out), 2);
  ExpectHas(out, "--model and --onnx are required");
  EXPECT_FALSE(std::filesystem::exists(Tmp() + "/x.onnx"));
}

// `train > log`: each epoch's line is in the file while the run goes on.
TEST(Deploy, EpochLinesReachAFileWhileTrainingRuns) {
  std::string log = Tmp() + "/flushed.log";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execl("apps/train", "apps/train", "--dataset=fashion_mnist", "--train_subset=2048", "--test_subset=256",
          "--epochs=4", "--workers=1", static_cast<char*>(nullptr));
    _exit(127);
  }
  bool seen_while_running = false;
  int status = 0;
  for (int waited_ms = 0; waited_ms < 600000; waited_ms += 50) {
    if (Read(log).find("epoch 1: train loss") != std::string::npos) {
      seen_while_running = waitpid(pid, &status, WNOHANG) == 0;
      break;
    }
    if (waitpid(pid, &status, WNOHANG) == pid) break;  // ended before the line was seen
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(seen_while_running) << "the first epoch's line reached the file only when train exited:\n" << Read(log);
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
  }
}

}  // namespace

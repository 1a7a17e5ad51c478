// Writes what tests/quant/ort_check.py compares: fmnist_resnet8 trained briefly
// on Fashion-MNIST, post-training quantized at W8A8 (min/max ranges) and W4A4
// (MSE ranges), converted, exported to ONNX (QDQ), and the integer model's
// logits on the 10,000 test images. Not a test by itself: onnx_runtime_test
// runs it, then ONNX Runtime on the exported files.
//
//   ort_fixture --out=DIR   # DIR/images.f32, labels.u8, {w8a8,w4a4}.onnx, .logits.f32
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "autograd/autograd.h"
#include "data/readers.h"
#include "models/resnet.h"
#include "nn/optim.h"
#include "quant/convert.h"
#include "quant/onnx_export.h"
#include "quant/prepare.h"

namespace quanta {
namespace {

// u8 (N, 28, 28, 1) images [begin, end) as normalized f32 (N, 1, 28, 28).
Tensor Images(const data::ImageDataset& d, int64_t begin, int64_t end) {
  Tensor x = d.images().Narrow(0, begin, end - begin).To(DType::kF32).Permute({0, 3, 1, 2});
  return Div(Sub(Div(x, 255.0), 0.2860), 0.3530).Contiguous();
}

bool WriteRaw(const std::string& path, const void* data, size_t bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!f) std::fprintf(stderr, "ort_fixture: cannot write %s\n", path.c_str());
  return static_cast<bool>(f);
}

int Run(const std::string& out) {
  auto train = data::ReadFashionMnist(data::Split::kTrain);
  auto test = data::ReadFashionMnist(data::Split::kTest);
  if (!train.ok() || !test.ok()) {
    std::fprintf(stderr, "ort_fixture: no Fashion-MNIST (tools/setup.sh installs dataset-fashion-mnist)\n");
    return 1;
  }
  const data::ImageDataset &tr = **train, &te = **test;
  Generator gen(3);
  auto net = models::ResNet::Make("fmnist_resnet8", 10, &gen);
  {
    nn::SGD opt({{net->Parameters()}}, {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4});
    net->Train();
    for (int64_t start = 0; start + 64 <= 9600; start += 64) {
      std::vector<int64_t> l(tr.labels().begin() + start, tr.labels().begin() + start + 64);
      opt.ZeroGrad();
      Backward(CrossEntropy(net->Forward(Images(tr, start, start + 64)), Tensor::FromVector(l, {64})));
      opt.Step();
    }
  }
  TensorMap weights = net->StateDict();
  std::filesystem::create_directories(out);
  const int64_t n = te.size(), batch = 500;
  Tensor images = Images(te, 0, n);
  if (!WriteRaw(out + "/images.f32", images.data<float>(), sizeof(float) * images.numel())) return 1;
  std::vector<uint8_t> labels(te.labels().begin(), te.labels().end());
  if (!WriteRaw(out + "/labels.u8", labels.data(), labels.size())) return 1;
  for (const auto& [name, policy] : {std::pair{"w8a8", "default 8 8 minmax\n"}, std::pair{"w4a4", "default 4 4 mse\n"}}) {
    Generator g(4);
    auto m = models::ResNet::Make("fmnist_resnet8", 10, &g);
    if (!m->LoadStateDict(weights).ok()) return 1;
    quant::PrepareReport r = quant::PrepareQat(*m, *quant::MixedPrecisionPolicy::Parse(policy));
    std::vector<Tensor> calibration;
    for (int b = 0; b < 8; ++b) calibration.push_back(Images(tr, b * 64, (b + 1) * 64));
    quant::Calibrate(r, *m, calibration, [&](const Tensor& x) { return m->Forward(x); });
    auto q = quant::Convert(*m);
    absl::Status s = quant::ExportOnnx(*q, out + "/" + name + ".onnx", {batch, 1, 28, 28});
    if (!s.ok()) {
      std::fprintf(stderr, "ort_fixture: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    std::vector<float> logits;
    for (int64_t start = 0; start < n; start += batch) {
      std::vector<float> l = q->Forward(images.Narrow(0, start, batch)).Contiguous().ToVector<float>();
      logits.insert(logits.end(), l.begin(), l.end());
    }
    if (!WriteRaw(out + "/" + name + ".logits.f32", logits.data(), sizeof(float) * logits.size())) return 1;
    std::printf("ort_fixture: %s exported, %lld test images\n", name, static_cast<long long>(n));
  }
  return 0;
}

}  // namespace
}  // namespace quanta

int main(int argc, char** argv) {
  std::string out;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--out=", 0) == 0) out = a.substr(6);
  }
  if (out.empty()) {
    std::fprintf(stderr, "usage: ort_fixture --out=DIR\n");
    return 2;
  }
  return quanta::Run(out);
}

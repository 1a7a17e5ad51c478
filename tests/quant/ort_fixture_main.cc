// Writes what tests/quant/ort_check.py compares: fmnist_resnet8 trained briefly
// on Fashion-MNIST, post-training quantized at W8A8 (min/max ranges) and W4A4
// (MSE ranges), and in the block formats MXFP8, MXFP6 / MXFP8, NVFP4 and, first
// and last layers included, MXFP4 / MXFP8 (blocks need no calibration),
// converted, exported to ONNX, and the integer model's logits on the test
// images (all 10,000 for the integer models, the first 1,000 for the block
// formats, which run on f32 kernels); and, per block format, a model that only
// block-quantizes its input (then a 1 x 1 identity convolution, exact in f32)
// with its output on inputs chosen to hit ties, saturation, all-zero blocks and
// a wide range of magnitudes. Not a test by itself: onnx_runtime_test runs it,
// then ONNX Runtime on the exported files.
//
//   ort_fixture --out=DIR   # DIR/images.f32, labels.u8, NAME.onnx, NAME.logits.f32,
//                           # blocks.f32, blocks_FORMAT.onnx, blocks_FORMAT.out.f32
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "autograd/autograd.h"
#include "data/readers.h"
#include "models/resnet.h"
#include "nn/optim.h"
#include "quant/convert.h"
#include "quant/onnx_export.h"
#include "quant/prepare.h"
#include "quant/quantizer.h"

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

// Inputs for the block-quantization models: (4, 40, 3, 5), 40 channels so that
// the second block of 32 (third of 16) is zero-padded. Sample 0 holds quarters
// of integers in [-40, 40] (many elements fall halfway between two codes);
// sample 1 zeros but for one spike per position (the rest of its block rounds
// to zero or saturates); sample 2 all-zero blocks at positions 0-2, and beyond
// them blocks whose largest magnitude is exactly 2^k (channels 0-31) or the
// float just below 2^k (32-39), k from -40 to 37, where Log misses floor(log2)
// (the E8M0 scale's correction step); sample 3 log-uniform magnitudes over
// 2^-30 .. 2^30 with random signs.
Tensor BlockInputs() {
  const int64_t n = 4, c = 40, hw = 15;
  std::vector<float> v(n * c * hw, 0.f);
  std::mt19937 rng(7);
  auto at = [&](int64_t s, int64_t ch, int64_t p) -> float& { return v[(s * c + ch) * hw + p]; };
  for (int64_t ch = 0; ch < c; ++ch) {
    for (int64_t p = 0; p < hw; ++p) {
      at(0, ch, p) = static_cast<float>(static_cast<int>(rng() % 81) - 40) / 4;
      at(1, ch, p) = ch == p % c ? 1e4f : 0.f;
      const float e = std::uniform_real_distribution<float>(-30.f, 30.f)(rng);
      at(3, ch, p) = ((rng() & 1) ? 1.f : -1.f) * std::exp2(e);
      if (p >= 3) {
        const float top = std::ldexp(1.f, -40 + 7 * static_cast<int>(p - 3));
        const float peak = ch < 32 ? top : std::nextafter(top, 0.f);
        const bool is_peak = ch == 0 || ch == 32;
        at(2, ch, p) = is_peak ? -peak : peak * std::uniform_real_distribution<float>(-1.f, 1.f)(rng);
      }
    }
  }
  return Tensor::FromVector(v, {n, c, 3, 5});
}

// input -> block-quantize (format) -> 1 x 1 convolution by the identity, its
// weight in the same format (ones are exact in every element type).
std::shared_ptr<quant::IntegerModel> BlockModel(const BlockFormat& format, int64_t channels) {
  auto m = std::make_shared<quant::IntegerModel>();
  int q = m->Add(quant::IntegerNode{.kind = quant::NodeKind::kQuantize, .name = "blocks", .inputs = {0},
                                    .block = format});
  std::vector<float> eye(channels * channels, 0.f);
  for (int64_t i = 0; i < channels; ++i) eye[i * channels + i] = 1.f;
  Tensor w = Tensor::FromVector(eye, {channels, channels, 1, 1});
  quant::IntegerNode conv{.kind = quant::NodeKind::kConv2d, .name = "identity", .inputs = {q}, .block = format};
  conv.weight_blocks = quant::BlockQuantizeWeight(w, format);
  conv.weight = quant::DecodeBlockWeight(conv.kind, conv.weight_blocks, Tensor(), w.shape());
  conv.weight_bits = quant::BlockElementBits(format);
  m->Add(std::move(conv));
  return m;
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
  struct Case {
    const char* name;
    const char* policy;
    int64_t images;
  };
  for (const auto& [name, policy, count] :
       {Case{"w8a8", "default 8 8 minmax\n", n}, Case{"w4a4", "default 4 4 mse\n", n},
        Case{"mxfp8", "default mxfp8 mxfp8\n", 1000}, Case{"mxfp6_mxfp8", "default mxfp6_e3m2 mxfp8\n", 1000},
        Case{"nvfp4", "default nvfp4 nvfp4\n", 1000},
        // Every layer in blocks: the one-channel image block-quantized, the
        // Linear's weight and its 2-D input in blocks too.
        Case{"mxfp4_all", "default mxfp4 mxfp8\nfirst_last_8bit off\n", 1000}}) {
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
    for (int64_t start = 0; start < count; start += batch) {
      std::vector<float> l = q->Forward(images.Narrow(0, start, batch)).Contiguous().ToVector<float>();
      logits.insert(logits.end(), l.begin(), l.end());
    }
    if (!WriteRaw(out + "/" + name + ".logits.f32", logits.data(), sizeof(float) * logits.size())) return 1;
    std::printf("ort_fixture: %s exported, %lld test images\n", name, static_cast<long long>(count));
  }
  Tensor x = BlockInputs();
  if (!WriteRaw(out + "/blocks.f32", x.data<float>(), sizeof(float) * x.numel())) return 1;
  for (const char* format : {"mxfp8", "mxfp8_e5m2", "mxfp6", "mxfp6_e3m2", "mxfp4", "nvfp4"}) {
    auto m = BlockModel(*quant::BlockFormatFromName(format), x.size(1));
    std::string base = out + "/blocks_" + format;
    absl::Status s = quant::ExportOnnx(*m, base + ".onnx", x.shape());
    if (!s.ok()) {
      std::fprintf(stderr, "ort_fixture: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    Tensor y = m->Forward(x).Contiguous();
    if (!WriteRaw(base + ".out.f32", y.data<float>(), sizeof(float) * y.numel())) return 1;
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

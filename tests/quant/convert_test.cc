// Convert: integer models against the fake-quant models they come from (MLP,
// CNNs with batch norm, max pooling, ConvBn2d, a CIFAR ResNet at W8A8, W4A8 and
// W4A4), saved and loaded, and the errors for unprepared models and bad files.
//
// Note [Conversion tolerance]: the integer model computes each layer's real
// output exactly (int32 accumulation; the fake-quant model accumulates in f32)
// and rounds it once at the consumer's input, as the fake-quant model does. The
// two can differ where a value lies within float error of a rounding boundary:
// then by one quantization step of that activation. A residual adds the
// quantized block input in both (Note [Where activations are quantized] in
// quant/convert.h). Measured on these models, Sequential models give exactly
// equal logits and the CIFAR ResNet at W8A8, W4A8 and W4A4 differs by at most
// 0.6% of the logits' spread (mean 0.01%); the tests allow 2% (mean 0.1%), and
// the real test set (tests/quant/convert_fmnist_test.cc) requires the same
// top-1 on at least 99.9% of it at every bit width.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>

#include "backends/cpu/cpu_backend.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "models/resnet.h"
#include "models/resnet_cifar.h"
#include "models/tiny_cnn.h"
#include "nn/layers.h"
#include "quant/convert.h"
#include "quant/integer_linear.h"
#include "quant/prepare.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace quanta::quant {
namespace {

struct Diff {
  double max_abs = 0, mean_abs = 0, ref_std = 0;
  double agree = 0;  // fraction of rows with the same argmax
};

Diff Compare(const Tensor& got, const Tensor& ref) {
  EXPECT_EQ(got.shape(), ref.shape());
  std::vector<float> g = got.ToVector<float>(), r = ref.ToVector<float>();
  Diff d;
  double mean = 0;
  for (float v : r) mean += v;
  mean /= r.size();
  for (size_t i = 0; i < g.size(); ++i) {
    double e = std::abs(g[i] - r[i]);
    d.max_abs = std::max(d.max_abs, e);
    d.mean_abs += e / g.size();
    d.ref_std += (r[i] - mean) * (r[i] - mean) / r.size();
  }
  d.ref_std = std::sqrt(d.ref_std);
  int64_t rows = ref.size(0), cols = ref.numel() / rows, same = 0;
  for (int64_t i = 0; i < rows; ++i) {
    auto gi = std::max_element(g.begin() + i * cols, g.begin() + (i + 1) * cols) - (g.begin() + i * cols);
    auto ri = std::max_element(r.begin() + i * cols, r.begin() + (i + 1) * cols) - (r.begin() + i * cols);
    same += gi == ri;
  }
  d.agree = static_cast<double>(same) / rows;
  return d;
}

// Tolerances in units of the logits' spread (max, mean): Note [Conversion tolerance].
struct Tolerance {
  double max, mean;
};
constexpr Tolerance kLogits{0.02, 0.001};

void ExpectClose(const Diff& d, const char* what, Tolerance tol = kLogits) {
  std::printf("%-28s max |d| %.4f  mean |d| %.5f  logits std %.4f  (max/std %.3f)  top-1 agree %.4f\n", what,
              d.max_abs, d.mean_abs, d.ref_std, d.max_abs / d.ref_std, d.agree);
  EXPECT_LE(d.max_abs, tol.max * d.ref_std) << what;
  EXPECT_LE(d.mean_abs, tol.mean * d.ref_std) << what;
}

// Gives every batch norm running statistics and affine values away from the
// identity (one channel with a negative gamma), as training would.
void RandomizeBatchNorms(nn::Module& model, uint64_t seed) {
  Generator gen(seed);
  NoGradGuard no_grad;
  for (auto& [name, m] : model.NamedModules()) {
    auto* bn = dynamic_cast<nn::BatchNorm2d*>(m);
    if (!bn) continue;
    int64_t c = bn->running_mean.numel();
    bn->running_mean.CopyFrom(Normal({c}, 0, 0.3, &gen));
    bn->running_var.CopyFrom(Uniform({c}, 0.5, 2.0, &gen));
    bn->weight.CopyFrom(Uniform({c}, 0.5, 1.5, &gen));
    bn->bias.CopyFrom(Normal({c}, 0.1, 0.2, &gen));
    std::vector<float> w = bn->weight.ToVector<float>();
    w[0] = -w[0];
    bn->weight.CopyFrom(Tensor::FromVector(w, {c}));
  }
}

// PTQ: prepare with the policy, calibrate on `batches`, eval mode.
PrepareReport PrepareAndCalibrate(nn::Module& model, const std::string& policy, const std::vector<Tensor>& batches) {
  auto p = MixedPrecisionPolicy::Parse(policy);
  EXPECT_TRUE(p.ok()) << p.status();
  PrepareReport r = PrepareQat(model, *p);
  Calibrate(r, model, batches, [&](const Tensor& x) { return dynamic_cast<nn::Layer&>(model).Forward(x); });
  model.Eval();
  return r;
}

std::vector<Tensor> Batches(const Shape& shape, int n, uint64_t seed, double mean = 0) {
  Generator gen(seed);
  std::vector<Tensor> out;
  for (int i = 0; i < n; ++i) out.push_back(Normal(shape, mean, 1, &gen));
  return out;
}

TEST(Convert, MlpMatchesFakeQuant) {
  Generator gen(1);
  auto net = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(20, 64, true, &gen), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(64, 32, true, &gen), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(32, 10, true, &gen));
  PrepareAndCalibrate(*net, "default 8 8 minmax\n", Batches({64, 20}, 4, 2));
  auto q = Convert(*net);
  // Linear, linear, linear and the input's quantize node: no dequantize between layers.
  int quantize = 0, dequantize = 0;
  for (const IntegerNode& n : q->nodes()) {
    quantize += n.kind == NodeKind::kQuantize;
    dequantize += n.kind == NodeKind::kDequantize;
  }
  EXPECT_EQ(quantize, 1);
  EXPECT_EQ(dequantize, 0);
  EXPECT_EQ(q->nodes().back().out_dtype, DType::kF32);
  Tensor x = Batches({256, 20}, 1, 3)[0];
  ExpectClose(Compare(q->Forward(x), net->Forward(x)), "mlp w8a8");
}

TEST(Convert, CnnWithBatchNormAndPoolingMatchesFakeQuant) {
  Generator gen(4);
  Conv2dOptions pad{.padding = {1, 1}};
  auto net = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Conv2d>(3, 16, 3, pad, false, &gen), std::make_shared<nn::BatchNorm2d>(16),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::MaxPool2d>(Pool2dOptions{}),
      std::make_shared<nn::Conv2d>(16, 24, 3, pad, true, &gen), std::make_shared<nn::BatchNorm2d>(24),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::Flatten>(),
      std::make_shared<nn::Linear>(24 * 4 * 4, 7, true, &gen));
  RandomizeBatchNorms(*net, 5);
  PrepareAndCalibrate(*net, "default 8 8 ema\n", Batches({16, 3, 8, 8}, 4, 6));
  auto q = Convert(*net);
  Tensor x = Batches({64, 3, 8, 8}, 1, 7)[0];
  ExpectClose(Compare(q->Forward(x), net->Forward(x)), "cnn+bn+maxpool w8a8");

  // TinyCnn (adaptive average pooling: the second conv's output stays f32).
  auto tiny = models::TinyCnn(8, 1, 4);
  RandomizeBatchNorms(*tiny, 9);
  PrepareAndCalibrate(*tiny, "default 8 8 ema\n", Batches({16, 1, 12, 12}, 4, 10));
  auto qt = Convert(*tiny);
  Tensor xt = Batches({64, 1, 12, 12}, 1, 11)[0];
  ExpectClose(Compare(qt->Forward(xt), tiny->Forward(xt)), "tiny_cnn w8a8");
}

TEST(Convert, ConvBn2dFoldsAsItTrained) {
  Generator gen(12);
  auto conv = std::make_shared<nn::Conv2d>(3, 8, 3, Conv2dOptions{.padding = {1, 1}}, false, &gen);
  auto bn = std::make_shared<nn::BatchNorm2d>(8);
  auto net = std::make_shared<nn::Sequential>(std::make_shared<ConvBn2d>(conv, bn), std::make_shared<nn::ReLU>(),
                                              std::make_shared<nn::AdaptiveAvgPool2d>(1, 1),
                                              std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(8, 5, true, &gen));
  RandomizeBatchNorms(*net, 13);
  PrepareAndCalibrate(*net, "default 8 8 ema\n", Batches({16, 3, 6, 6}, 4, 14));
  auto q = Convert(*net);
  Tensor x = Batches({64, 3, 6, 6}, 1, 15)[0];
  ExpectClose(Compare(q->Forward(x), net->Forward(x)), "conv_bn2d w8a8");
}

class ConvertResNet : public ::testing::TestWithParam<const char*> {};

TEST_P(ConvertResNet, MatchesFakeQuant) {
  Generator gen(16);
  auto net = models::CifarResNet::Make(8, 10, &gen);
  RandomizeBatchNorms(*net, 17);
  PrepareAndCalibrate(*net, GetParam(), Batches({16, 3, 16, 16}, 4, 18));
  auto q = Convert(*net);
  Tensor x = Batches({64, 3, 16, 16}, 1, 19)[0];
  ExpectClose(Compare(q->Forward(x), net->Forward(x)), GetParam());
}

INSTANTIATE_TEST_SUITE_P(Policies, ConvertResNet,
                         ::testing::Values("default 8 8 ema\n", "default 4 8 ema\nfirst_last_8bit off\n",
                                           "default 4 4 ema\n"));

std::string TempPath(const std::string& name);

// Note [Codebook weights] in quant/integer_model.cc: layers given 2, 3 or 4
// weight bits are stored at that many bits a weight (indices into a codebook of
// their distinct integers); the first and last layers stay int8.
TEST(Convert, LowBitWeightsAreStoredAtTheirBits) {
  for (int bits : {4, 3, 2}) {
    SCOPED_TRACE(bits);
    Generator gen(20);
    auto net = models::CifarResNet::Make(8, 10, &gen);
    PrepareAndCalibrate(*net, absl::StrCat("default ", bits, " 8 ema\n"), Batches({8, 3, 16, 16}, 2, 21));
    auto q = Convert(*net);
    std::string path = TempPath(absl::StrCat("resnet8_w", bits, ".safetensors"));
    ASSERT_TRUE(q->Save(path).ok());
    auto file = LoadSafetensors(path);
    ASSERT_TRUE(file.ok()) << file.status();
    int64_t expected = 0, packed_layers = 0;
    for (const IntegerNode& n : q->nodes()) {
      if (!n.weight.defined()) continue;
      bool edge = n.name == "conv1" || n.name == "fc";  // first_last_8bit
      EXPECT_EQ(n.weight.dtype(), edge ? DType::kQInt8 : DType::kQInt4) << n.name;
      EXPECT_EQ(n.weight_bits, edge ? 8 : bits) << n.name;
      const Tensor& stored = file->tensors.at(n.name + ".weight");
      int64_t weight_bytes = edge ? n.weight.numel() : n.weight.numel() * bits / 8;  // every count here divides by 8
      EXPECT_EQ(stored.numel(), weight_bytes) << n.name;
      int64_t book = 0;
      if (!edge) {
        book = file->tensors.at(n.name + ".weight_codebook").numel();
        EXPECT_GT(book, int64_t{1} << (bits - 1)) << n.name;  // b bits are the fewest that index it
        EXPECT_LE(book, int64_t{1} << bits) << n.name;
        ++packed_layers;
      }
      int64_t channels = static_cast<int64_t>(n.weight.qparams().scales.size());
      expected += weight_bytes + book + 4 * channels + (n.bias.defined() ? 4 * n.bias.numel() : 0);
    }
    EXPECT_EQ(packed_layers, 6);  // two convolutions in each of the 3 stages (option-A shortcuts have none)
    EXPECT_EQ(q->Bytes(), expected);
    auto loaded = IntegerModel::Load(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    for (size_t i = 0; i < q->nodes().size(); ++i) {
      const IntegerNode &a = q->nodes()[i], &b = (*loaded)->nodes()[i];
      if (!a.weight.defined()) continue;
      EXPECT_EQ(b.weight.dtype(), a.weight.dtype()) << a.name;
      EXPECT_EQ(b.weight.IntRepr(), a.weight.IntRepr()) << a.name;
    }
    EXPECT_EQ((*loaded)->Summary(), q->Summary());
    Tensor x = Batches({4, 3, 16, 16}, 1, 22)[0];
    EXPECT_EQ((*loaded)->Forward(x).ToVector<float>(), q->Forward(x).ToVector<float>());
  }
}

// The bit stream worked by hand: a linear layer of 8 weights given 3 bits with
// the values below has the codebook {-4, -1, 0, 2, 3} (5 values: 3-bit indices)
// and the indices 0 4 2 3 1 0 4 4, written low bits first:
//   bits 0-2: 000, 3-5: 100 (bit 5), 6-8: 010 (bit 7), 9-11: 011 (bits 9, 10),
//   12-14: 001 (bit 12), 15-17: 000, 18-20: 100 (bit 20), 21-23: 100 (bit 23)
//   -> bytes 0xA0 (bits 5, 7), 0x16 (bits 9, 10, 12), 0x90 (bits 20, 23).
// With 2 bits and the values {-2, 1, 0, -1} repeated: indices 0 3 2 1 -> 0x6C.
TEST(Convert, PackedIndicesMatchTheBitStreamWorkedByHand) {
  auto model_of = [](const std::vector<int32_t>& w, int bits) {
    auto m = std::make_shared<IntegerModel>();
    IntegerNode quantize{.kind = NodeKind::kQuantize, .name = "q", .inputs = {0}, .out_dtype = DType::kQUInt8,
                         .out_params = QuantParams::PerTensor(0.1, 0)};
    m->Add(quantize);
    IntegerNode linear{.kind = NodeKind::kLinear, .name = "fc", .inputs = {1}};
    linear.weight = Tensor::FromQuantized(w, {static_cast<int64_t>(w.size()), 1}, DType::kQInt4,
                                          QuantParams::PerChannel({0.5}, {0}, 1).WithRange(-8, 7));
    linear.weight_bits = bits;
    linear.act_bits = 8;
    m->Add(linear);
    return m;
  };
  struct Case {
    std::vector<int32_t> weights;
    int bits;
    std::vector<int8_t> book;
    std::vector<uint8_t> packed;
  };
  for (const Case& c : {Case{{-4, 3, 0, 2, -1, -4, 3, 3}, 3, {-4, -1, 0, 2, 3}, {0xA0, 0x16, 0x90}},
                        Case{{-2, 1, 0, -1, -2, 1, 0, -1}, 2, {-2, -1, 0, 1}, {0x6C, 0x6C}}}) {
    auto m = model_of(c.weights, c.bits);
    EXPECT_EQ(m->Bytes(), static_cast<int64_t>(c.packed.size() + c.book.size() + 4));
    std::string path = TempPath(absl::StrCat("hand_w", c.bits, ".safetensors"));
    ASSERT_TRUE(m->Save(path).ok());
    auto file = LoadSafetensors(path);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ(file->tensors.at("fc.weight").ToVector<uint8_t>(), c.packed);
    EXPECT_EQ(file->tensors.at("fc.weight_codebook").ToVector<int8_t>(), c.book);
    auto loaded = IntegerModel::Load(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ((*loaded)->node(2).weight.IntRepr(), c.weights);
    EXPECT_EQ((*loaded)->node(2).weight.dtype(), DType::kQInt4);
    // A codebook that the stated index width cannot address is refused by name.
    std::map<std::string, std::string> meta = file->metadata;
    std::string& graph = meta["quanta.graph"];
    graph.replace(graph.find(absl::StrCat("wpack=", c.bits)), 7, "wpack=1");
    std::string bad = TempPath("hand_bad.safetensors");
    ASSERT_TRUE(SaveSafetensors(bad, file->tensors, meta).ok());
    auto refused = IntegerModel::Load(bad);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("'wpack'"), std::string::npos) << refused.status();
  }
}

// Files written before the index width was recorded ("wcodes" without "wpack")
// hold 4-bit indices, and qint4 weights without a codebook two a byte: the
// fuzzer's seeds from then still load (APoT's codes; 4-bit weights in [-8, 7]).
TEST(Convert, FilesFromBeforePackingStillLoad) {
  auto uniform = IntegerModel::Load("tests/quant/testdata/integer_model_seeds/tiny_w4a8.safetensors");
  ASSERT_TRUE(uniform.ok()) << uniform.status();
  int int4_layers = 0;
  for (const IntegerNode& n : (*uniform)->nodes()) int4_layers += n.weight.defined() && n.weight.dtype() == DType::kQInt4;
  EXPECT_GT(int4_layers, 0);

  auto loaded = IntegerModel::Load("tests/quant/testdata/integer_model_seeds/tiny_apot_w4a8.safetensors");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  int codebook_layers = 0;
  for (const IntegerNode& n : (*loaded)->nodes()) {
    if (!n.weight.defined()) continue;
    std::set<int32_t> distinct;
    for (int32_t v : n.weight.IntRepr()) distinct.insert(v);
    if (n.weight_bits != 4) continue;
    const std::set<int32_t> levels = {0, 1, 2, 3, 4, 6, 8, 10};  // APoT's 4-bit levels (docs/apot.md)
    for (int32_t v : distinct) EXPECT_TRUE(levels.count(std::abs(v))) << n.name << ": " << v;
    EXPECT_GT(distinct.size(), 8u) << n.name;  // more than 3 bits' worth: 4-bit indices
    ++codebook_layers;
  }
  EXPECT_GT(codebook_layers, 0);
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

TEST(Convert, SavedModelLoadsAndGivesIdenticalOutputs) {
  Generator gen(22);
  auto net = models::CifarResNet::Make(8, 10, &gen);
  RandomizeBatchNorms(*net, 23);
  PrepareAndCalibrate(*net, "default 4 8 ema\nlayer2.* 8 8\n", Batches({8, 3, 16, 16}, 2, 24));
  auto q = Convert(*net);
  std::string path = TempPath("resnet8.int.safetensors");
  ASSERT_TRUE(q->Save(path, {{"policy", "default 4 8 ema; layer2.* 8 8"}}).ok());
  auto loaded = IntegerModel::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->metadata().at("policy"), "default 4 8 ema; layer2.* 8 8");
  EXPECT_EQ((*loaded)->Summary(), q->Summary());
  Tensor x = Batches({4, 3, 16, 16}, 1, 25)[0];
  EXPECT_EQ((*loaded)->Forward(x).ToVector<float>(), q->Forward(x).ToVector<float>());
  // The file is the weights at their storage size plus a small header.
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  int64_t file_bytes = f.tellg();
  EXPECT_GE(file_bytes, q->Bytes());
  EXPECT_LE(file_bytes, q->Bytes() + 16384);
}

TEST(Convert, CorruptFilesGiveClearErrors) {
  Generator gen(26);
  auto net = models::TinyCnn(27, 1, 4);
  PrepareAndCalibrate(*net, "default 8 8 ema\n", Batches({8, 1, 12, 12}, 2, 28));
  auto q = Convert(*net);
  std::string path = TempPath("tiny.int.safetensors");
  ASSERT_TRUE(q->Save(path).ok());
  std::string bytes;
  {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto expect_error = [&](const std::string& data, const std::string& fragment) {
    auto r = IntegerModel::Parse(data, "model.safetensors");
    ASSERT_FALSE(r.ok()) << fragment;
    EXPECT_NE(r.status().message().find(fragment), std::string::npos) << r.status();
  };
  expect_error(bytes.substr(0, bytes.size() / 2), "model.safetensors");  // truncated
  std::string other = bytes;
  other.replace(other.find("conv2d name="), 6, "convXd");
  expect_error(other, "unknown node kind 'convXd'");
  other = bytes;
  other.replace(other.find("0.weight_scale"), 14, "0.weight_scalX");
  expect_error(other, "'0.weight_scale' is missing");
  other = bytes;
  other.replace(other.find("in=0"), 4, "in=9");
  expect_error(other, "not an earlier node");
  other = bytes;
  other.replace(other.find("integer_model/1"), 15, "integer_model/2");
  expect_error(other, "not a Quanta integer model");
  auto missing = IntegerModel::Load(TempPath("no_such_model.safetensors"));
  EXPECT_FALSE(missing.ok());
}

// ConvertFloat: batch norm folded, f32 throughout; equal to the float model in
// eval up to f32 rounding of the folded weights (relative 1e-5 of the spread).
// ResNet-20 (CIFAR, 100 classes) on 32x32, by hand: the stem 16*3*9*32*32,
// six 16->16 convolutions at 32x32 (16*16*9*1024 each), a 16->32 stride-2
// convolution to 16x16 (32*16*9*256) and five 32->32 ones (32*32*9*256), the same
// again at 8x8 and 64 channels, and the classifier 64*100: 40,556,800 per image.
// The two option-A shortcuts and the pooling count none.
TEST(Convert, MultiplyAddsOfResNet20ByHand) {
  Generator gen(35);
  auto net = models::CifarResNet::Make(20, 100, &gen);
  net->Eval();
  auto f = ConvertFloat(*net);
  const int64_t per_image = 16 * 3 * 9 * 1024 + 6 * (16 * 16 * 9 * 1024) + 32 * 16 * 9 * 256 +
                            5 * (32 * 32 * 9 * 256) + 64 * 32 * 9 * 64 + 5 * (64 * 64 * 9 * 64) + 64 * 100;
  EXPECT_EQ(per_image, 40556800);
  EXPECT_EQ(f->MultiplyAdds({1, 3, 32, 32}), per_image);
  EXPECT_EQ(f->MultiplyAdds({64, 3, 32, 32}), 64 * per_image);
  EXPECT_THROW(f->MultiplyAdds({64, 3 * 32 * 32}), Error);  // a flat input: named, not a crash
}

TEST(Convert, FloatConversionEqualsTheFloatModel) {
  Generator gen(31);
  std::vector<std::shared_ptr<nn::Layer>> nets = {models::CifarResNet::Make(8, 10, &gen), models::TinyCnn(32, 3, 4),
                                                  models::ResNet::Make("resnet18", 10, &gen)};
  for (auto& net : nets) {
    RandomizeBatchNorms(*net, 33);
    net->Eval();
    auto f = ConvertFloat(*net);
    for (const IntegerNode& n : f->nodes()) EXPECT_NE(n.out_dtype, DType::kQInt8);
    Tensor x = Batches({4, 3, 32, 32}, 1, 34)[0];
    Tensor want = net->Forward(x), got = f->Forward(x);
    Diff d = Compare(got, want);
    EXPECT_LE(d.max_abs, 1e-5 * std::max(1.0, d.ref_std) + 1e-5) << d.max_abs;
    EXPECT_EQ(d.agree, 1.0);
    std::string path = TempPath("float.safetensors");
    ASSERT_TRUE(f->Save(path).ok());
    auto loaded = IntegerModel::Load(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ((*loaded)->Forward(x).ToVector<float>(), got.ToVector<float>());
    EXPECT_EQ(f->Bytes(), 4 * net->NumParameters() - 4 * [&] {
      int64_t bn = 0;  // folded away: each BN's running stats are buffers; its gamma goes into the weights
      for (auto& [name, m] : net->NamedModules()) {
        if (auto* b = dynamic_cast<nn::BatchNorm2d*>(m)) bn += b->weight.numel();
      }
      return bn;
    }());
  }
}

// The loader's fuzz target over every truncation and byte flip of a converted
// model (the header and graph text in full, the weights sampled): int8 weights,
// 2-bit weights packed four a byte, and APoT's 4-bit codes, both stored through
// a codebook (Note [Codebook weights] in quant/integer_model.cc), and MXFP4
// blocks (Note [Block-format nodes] in quant/integer_model.h). Writes the files as the fuzzer's seeds
// (tests/quant/testdata/integer_model_seeds) when QUANTA_WRITE_SEEDS names a folder.
TEST(Convert, LoaderFuzzTargetSurvivesMutations) {
  for (const auto& [policy, seed] : {std::pair{"default 8 8 ema\n", "tiny_w8a8.safetensors"},
                                     {"default 2 8 ema\nfirst_last_8bit off\n", "tiny_w2a8.safetensors"},
                                     {"default 4 8 apot\nfirst_last_8bit off\n", "tiny_apot_w4a8_packed.safetensors"},
                                     {"default mxfp4 mxfp8\n", "tiny_mxfp4_mxfp8.safetensors"}}) {
    SCOPED_TRACE(policy);
    auto net = models::TinyCnn(35, 1, 4);
    PrepareAndCalibrate(*net, policy, Batches({4, 1, 12, 12}, 1, 36));
    auto q = Convert(*net);
    std::string path = TempPath(seed);
    ASSERT_TRUE(q->Save(path).ok());
    std::string bytes;
    {
      std::ifstream f(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(f), {});
    }
    if (std::string(seed) == "tiny_mxfp4_mxfp8.safetensors") {  // int8 first and last, MX between
      EXPECT_NE(bytes.find(" block=mxfp4"), std::string::npos);
    } else if (std::string(seed) != "tiny_w8a8.safetensors") {
      EXPECT_NE(bytes.find(" wpack="), std::string::npos);
    }
    if (const char* dir = std::getenv("QUANTA_WRITE_SEEDS")) {
      std::ofstream(std::string(dir) + "/" + seed, std::ios::binary) << bytes;
    }
    auto run = [](const std::string& b) { LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(b.data()), b.size()); };
    run(bytes);
    uint64_t header = 8;
    std::memcpy(&header, bytes.data(), 8);
    size_t text_end = std::min(bytes.size(), static_cast<size_t>(8 + header));
    for (size_t n = 0; n < bytes.size(); n += n < text_end ? 1 : 97) run(bytes.substr(0, n));
    for (size_t i = 0; i < bytes.size(); i += i < text_end ? 1 : 89) {
      for (uint8_t flip : {0x01, 0x20, 0xff}) {
        std::string m = bytes;
        m[i] = static_cast<char>(m[i] ^ flip);
        run(m);
      }
    }
  }
}

// Dynamic IntegerLinear with 7-bit activations (PyTorch's dynamic Linear,
// reduce_range): x lies on the 7-bit grid of its own range [-0.5, 12.2] (scale
// 12.7 / 127 = 0.1, zero point 5) and each weight row on its max-abs grid
// (1.27 / 127 = 0.01), so the integer layer computes x w^T + b to f32 rounding;
// 8-bit activations (scale 12.7 / 255) cannot hold those x and miss by more.
// 7-bit sources run 8-bit weights whole even without VNNI (2 * 127 * 127 <=
// 32767); 8-bit ones split there, which shows the oneDNN kernel ran.
TEST(Convert, DynamicLinearWithSevenBitActivations) {
  std::vector<float> xs(2 * 12), ws(5 * 12), bs = {0.5, -1, 0, 2, 0.25};
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = -0.5f + 0.1f * static_cast<float>((i * 37) % 128);
  xs[3] = -0.5f, xs[17] = 12.2f;  // the batch's range
  for (size_t i = 0; i < ws.size(); ++i) ws[i] = 0.01f * static_cast<float>(static_cast<int>((i * 53) % 255) - 127);
  for (int r = 0; r < 5; ++r) ws[r * 12 + r] = r % 2 ? -1.27f : 1.27f;  // each row's max |w|
  Tensor x = Tensor::FromVector(xs, {2, 12}), w = Tensor::FromVector(ws, {5, 12}), b = Tensor::FromVector(bs, {5});
  nn::Linear linear(12, 5);
  {
    NoGradGuard no_grad;
    linear.weight.CopyFrom(w);
    linear.bias.CopyFrom(b);
  }
  std::vector<double> want = Add(Matmul(x.To(DType::kF64), w.To(DType::kF64).Transpose(0, 1)), b.To(DType::kF64))
                                 .ToVector<double>();
  NoGradGuard no_grad;
  auto run = [&](int bits, size_t* splits) {
    auto q = IntegerLinear::From(linear, {.dynamic = true, .dynamic_bits = bits});
    const size_t before = cpu::OneDnnSplitWeightCalls();
    std::vector<float> y = q->Forward(x).ToVector<float>();
    *splits = cpu::OneDnnSplitWeightCalls() - before;
    double worst = 0;
    for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::abs(y[i] - want[i]));
    return worst;
  };
  size_t splits7 = 0, splits8 = 0;
  EXPECT_LT(run(7, &splits7), 1e-4);
  EXPECT_GT(run(8, &splits8), 1e-3);
  EXPECT_EQ(splits7, 0u);
  EXPECT_EQ(splits8, cpu::OneDnnHasVnni() ? 0u : 1u);
  EXPECT_THROW(IntegerLinear::From(linear, {.dynamic = true, .dynamic_bits = 9}), Error);
}

TEST(Convert, UnpreparedModelsAreRefusedByName) {
  auto net = models::TinyCnn(29, 1, 4);
  try {
    Convert(*net);
    FAIL() << "expected quanta::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("convert: 0 has no weight quantizer"), std::string::npos) << e.what();
  }
  auto prepared = models::TinyCnn(30, 1, 4);
  PrepareQat(*prepared, *MixedPrecisionPolicy::Parse("default 8 8 ema\n"));
  try {
    Convert(*prepared);  // never saw data
    FAIL() << "expected quanta::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has not seen data"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace quanta::quant

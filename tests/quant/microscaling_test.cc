// Block formats as layer formats (Note [Block formats in policies] in
// quant/quantizer.h): policy text, the weight and activation groupings worked
// by hand, NVFP4's per-sample tensor scale, model bytes, and conversion (blocks
// stored, decoded once, saved and loaded; a residual network whose shortcut
// reads the block-quantized value, as training does).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ops.h"
#include "gtest/gtest.h"
#include "nn/layers.h"
#include "quant/convert.h"
#include "quant/integer_model.h"
#include "quant/onnx_export.h"
#include "quant/prepare.h"
#include "quant/quantizer.h"

namespace quanta::quant {
namespace {

std::vector<float> Values(const Tensor& t) { return t.To(DType::kF32).Contiguous().ToVector<float>(); }

TEST(Microscaling, PolicyText) {
  auto p = MixedPrecisionPolicy::Parse("default mxfp4 mxfp8\nlayer3.* nvfp4 nvfp4\nfc 8 mxfp6 lsq\n");
  ASSERT_TRUE(p.ok()) << p.status();
  QConfig mid = p->For("layer1.0.conv1", false);
  ASSERT_TRUE(mid.weight_format && mid.act_format);
  EXPECT_EQ(*mid.weight_format, BlockFormat::Mx(DType::kF4E2M1));
  EXPECT_EQ(*mid.act_format, BlockFormat::Mx(DType::kF8E4M3));
  EXPECT_EQ(mid.weight_bits, 4);
  EXPECT_EQ(mid.act_bits, 8);
  QConfig l3 = p->For("layer3.0.conv2", false);
  EXPECT_EQ(*l3.weight_format, BlockFormat::Nvfp4());
  // A rule may mix integer bits and a format.
  QConfig fc = p->For("fc", true);
  EXPECT_FALSE(fc.weight_format);
  EXPECT_EQ(fc.weight_bits, 8);
  EXPECT_EQ(*fc.act_format, BlockFormat::Mx(DType::kF6E2M3));
  EXPECT_EQ(fc.act_bits, 6);
  // The first and last layers stay int8 unless a rule names them.
  QConfig first = p->For("conv1", true);
  EXPECT_FALSE(first.weight_format || first.act_format);
  EXPECT_EQ(first.weight_bits, 8);
  auto bad = MixedPrecisionPolicy::Parse("default mxfp3 8\n", "p.txt");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("p.txt:1"), std::string::npos) << bad.status();
  EXPECT_NE(std::string(bad.status().message()).find("mxfp4"), std::string::npos) << bad.status();
  EXPECT_EQ(BlockFormatName(BlockFormat::Nvfp4()), "nvfp4");
  EXPECT_FALSE(BlockFormatFromName("int4"));
}

// A conv weight (O, C, KH, KW) is blocked along its flattened (C * KH * KW)
// rows, zero-padded to 32: here 2 x 3 x 3 = 18 values, one MXFP4 block a row.
TEST(Microscaling, WeightBlocksByHand) {
  std::vector<float> w(2 * 18, 0.f);
  // Row 0: amax 5 -> E8M0 scale 2^(floor(log2 5) - 2) = 1; E2M1 levels
  // 0 0.5 1 1.5 2 3 4 6: 0.3 -> 0.5, 2.6 -> 3, 5 -> 4 (the tie between 4 and
  // 6 goes to the even code, 4), -1.2 -> -1.
  w[0] = 0.3f, w[1] = 2.6f, w[2] = 5.f, w[3] = -1.2f;
  // Row 1: amax 0.7 -> scale 2^(-1 - 2) = 1/8; 0.7 / (1/8) = 5.6 -> 6 -> 0.75;
  // 0.1 / (1/8) = 0.8 -> 1 -> 0.125.
  w[18] = 0.7f, w[19] = 0.1f;
  Tensor t = Tensor::FromVector(w, {2, 2, 3, 3});
  BlockFormat mxfp4 = BlockFormat::Mx(DType::kF4E2M1);
  std::vector<float> q = Values(BlockFakeQuantizeWeight(t, mxfp4));
  EXPECT_EQ(q[0], 0.5f);
  EXPECT_EQ(q[1], 3.f);
  EXPECT_EQ(q[2], 4.f);
  EXPECT_EQ(q[3], -1.f);
  EXPECT_EQ(q[18], 0.75f);
  EXPECT_EQ(q[19], 0.125f);
  // Stored: a (2, 32) block matrix, 2 x 32 / 2 bytes of codes and 2 scales.
  BlockQuantized b = BlockQuantizeWeight(t, mxfp4);
  EXPECT_EQ(b.codes.shape(), (Shape{2, 32}));
  EXPECT_EQ(Values(b.scales.To(DType::kF32)), (std::vector<float>{1.f, 0.125f}));
  EXPECT_EQ(BlockWeightBytes(t.shape(), mxfp4), 2 * 32 / 2 + 2);
  EXPECT_EQ(Values(BlockDequantizeWeight(b, t.shape())), q);
  // 32 | rest: exactly 4.25 bits a weight. NVFP4: 4.5 and the f32 tensor scale.
  EXPECT_EQ(BlockWeightBytes({10, 64}, mxfp4), 640 * 17 / 32);
  EXPECT_EQ(BlockWeightBytes({10, 64}, BlockFormat::Nvfp4()), 640 * 9 / 16 + 4);
}

// Activations: groups along a convolution's channels at each pixel.
TEST(Microscaling, ActivationGroupsAlongChannels) {
  // (1, 64, 1, 2): pixel 0 holds 1 in channels 0-31 and 100 in 32-63; pixel
  // 1 holds 0.01 except channel 0, 3. Each pixel's 64 channels are two blocks.
  std::vector<float> x(128);
  for (int c = 0; c < 64; ++c) {
    x[c * 2] = c < 32 ? 1.f : 100.f;
    x[c * 2 + 1] = c == 0 ? 3.f : 0.01f;
  }
  Tensor t = Tensor::FromVector(x, {1, 64, 1, 2});
  BlockQuantizer q(BlockFormat::Mx(DType::kF4E2M1), /*weight=*/false);
  std::vector<float> y = Values(q.Forward(t));
  // Pixel 0: 1 and 100 sit in different blocks, so both survive (100: scale
  // 2^(6 - 2) = 16, 100 / 16 = 6.25 -> 6 -> 96).
  EXPECT_EQ(y[0], 1.f);
  EXPECT_EQ(y[32 * 2], 96.f);
  // Pixel 1, block of channels 0-31: amax 3 -> scale 2^(1 - 2) = 1/2; 0.01 / 0.5
  // = 0.02 -> 0. Channels 32-63: amax 0.01 -> scale 2^(-7 - 2); 0.01 * 512 =
  // 5.12 -> 6 -> 6 / 512.
  EXPECT_EQ(y[1], 3.f);
  EXPECT_EQ(y[1 * 2 + 1], 0.f);
  EXPECT_FLOAT_EQ(y[40 * 2 + 1], 6.f / 512);
}

// NVFP4's per-tensor scale is taken per sample: a batch gives what each of its
// examples gives alone.
TEST(Microscaling, Nvfp4PerSampleTensorScale) {
  Generator gen(3);
  Tensor a = Normal({1, 32, 2, 2}, 0, 1, &gen), b = Mul(Normal({1, 32, 2, 2}, 0, 1, &gen), 50.0);
  BlockQuantizer q(BlockFormat::Nvfp4(), /*weight=*/false);
  std::vector<float> both = Values(q.Forward(Concat({a, b}, 0)));
  std::vector<float> alone = Values(Concat({q.Forward(a), q.Forward(b)}, 0));
  EXPECT_EQ(both, alone);
  // Whole-tensor scaling would have changed a's values (its tensor scale would
  // come from b's amax, 50 times larger).
  std::vector<float> whole = Values(BlockFakeQuantizeAlong(Concat({a, b}, 0), 1, BlockFormat::Nvfp4()));
  EXPECT_NE(std::vector<float>(whole.begin(), whole.begin() + 128), std::vector<float>(alone.begin(), alone.begin() + 128));
}

// conv -> bn -> relu -> conv -> bn (+ the quantized input: a residual) ->
// relu -> pool -> linear, every layer in a block format.
class ResidualNet : public nn::Layer, public Convertible {
 public:
  ResidualNet() {
    Generator gen(5);
    conv1 = RegisterModule("conv1", std::make_shared<nn::Conv2d>(3, 8, 3, Conv2dOptions{.padding = {1, 1}}, true, &gen));
    bn1 = RegisterModule("bn1", std::make_shared<nn::BatchNorm2d>(8));
    conv2 = RegisterModule("conv2", std::make_shared<nn::Conv2d>(8, 8, 3, Conv2dOptions{.padding = {1, 1}}, false, &gen));
    bn2 = RegisterModule("bn2", std::make_shared<nn::BatchNorm2d>(8));
    fc = RegisterModule("fc", std::make_shared<nn::Linear>(8, 40, true, &gen));
  }
  Tensor Forward(const Tensor& x) override {
    Tensor h = Relu(bn1->Forward(conv1->Forward(x)));
    Tensor hq = conv2->QuantizeInput(h);  // read by conv2 and the shortcut
    Tensor y = Relu(Add(bn2->Forward(conv2->ForwardQuantized(hq)), hq));
    return fc->Forward(Mean(y, {2, 3}));
  }
  void ConvertTo(IntegerBuilder& b) const override {
    int h = b.Conv("conv1", *conv1, bn1.get(), b.input(), true, conv2.get());
    int y = b.Conv("conv2", *conv2, bn2.get(), h, true, nullptr, /*residual=*/h);
    b.Linear("fc", *fc, b.GlobalAvgPool(y), false, nullptr);
  }
  std::shared_ptr<nn::Conv2d> conv1, conv2;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2;
  std::shared_ptr<nn::Linear> fc;
};

TEST(Microscaling, ConvertSaveLoad) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/microscaling_model.safetensors";
  for (const char* formats : {"mxfp4 mxfp8", "nvfp4 nvfp4", "mxfp6 mxfp8_e5m2"}) {
    SCOPED_TRACE(formats);
    ResidualNet net;
    Generator gen(7);
    // Batch statistics that are not the identity, so folding has work to do.
    net.Train();
    for (int i = 0; i < 3; ++i) net.Forward(Normal({4, 3, 6, 6}, 0.5, 2, &gen));
    auto policy = MixedPrecisionPolicy::Parse(std::string("default ") + formats + "\nfirst_last_8bit off\n");
    ASSERT_TRUE(policy.ok());
    PrepareReport report = PrepareQat(net, *policy);
    ASSERT_EQ(report.rows.size(), 3u);
    net.Eval();
    Tensor x = Normal({5, 3, 6, 6}, 0, 1, &gen);
    std::vector<float> want = Values(net.Forward(x));
    std::shared_ptr<IntegerModel> q = Convert(net);
    std::vector<float> got = Values(q->Forward(x));
    ASSERT_EQ(got.size(), want.size());
    double worst = 0, scale = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
      scale = std::max(scale, std::fabs(double(want[i])));
    }
    // The same values up to f32 rounding (batch norm folded into the weights
    // rounds differently); a flipped block element would move a logit by far
    // more than this.
    EXPECT_LE(worst, 1e-4 * scale) << q->Summary();
    // conv2's residual is the block-quantized node both it and training read.
    const IntegerNode& conv2 = q->nodes()[q->nodes().size() - 4];
    ASSERT_EQ(conv2.name, "conv2");
    ASSERT_GE(conv2.residual, 0);
    EXPECT_EQ(q->node(conv2.residual).kind, NodeKind::kQuantize);
    EXPECT_TRUE(q->node(conv2.residual).block.has_value());
    EXPECT_EQ(conv2.residual, conv2.inputs[0]);
    // Bytes: the blocks, conv factors and biases (f32), nothing decoded.
    BlockFormat wf = *report.rows[0].config.weight_format;
    int64_t bytes = BlockWeightBytes({8, 3, 3, 3}, wf) + 4 * 8 + 4 * 8 + BlockWeightBytes({8, 8, 3, 3}, wf) + 4 * 8 +
                    4 * 8 + BlockWeightBytes({40, 8}, wf) + 4 * 40;
    EXPECT_EQ(q->Bytes(), bytes);
    EXPECT_EQ(ModelSizeBytes(net, report), BlockWeightBytes({8, 3, 3, 3}, wf) + BlockWeightBytes({8, 8, 3, 3}, wf) +
                                               BlockWeightBytes({40, 8}, wf) + 4 * (8 + 40) + 4 * 4 * 8);
    // The report names the formats and measures the blocks' SQNR (no grid to show).
    std::string text = QuantReport(report);
    EXPECT_NE(text.find(std::string("conv2                    ") + BlockFormatName(wf) + "/"), std::string::npos) << text;
    EXPECT_EQ(text.find("nan"), std::string::npos) << text;
    EXPECT_NE(report.ToString().find(BlockFormatName(wf) + "/"), std::string::npos) << report.ToString();
    // Saved and loaded: the same outputs, from codes stored packed.
    ASSERT_TRUE(q->Save(path).ok());
    auto loaded = IntegerModel::Load(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(Values((*loaded)->Forward(x)), got);
    auto file = LoadSafetensors(path);
    ASSERT_TRUE(file.ok());
    const int64_t padded = (72 + wf.cols - 1) / wf.cols * wf.cols;  // conv2's 8 x 3 x 3 per row
    EXPECT_EQ(file->tensors.at("conv2.weight_codes").numel(), StorageBytes(wf.element, 8 * padded));
    EXPECT_EQ(file->tensors.count("conv2.weight"), 0u);
    // Exported at opset 21 (Note [Block formats in ONNX]); ONNX Runtime runs such
    // files in tests/quant:onnx_runtime_test, which holds them to Quanta's outputs.
    absl::StatusOr<std::string> onnx = OnnxBytes(*q, {1, 3, 6, 6});
    ASSERT_TRUE(onnx.ok()) << onnx.status();
    EXPECT_NE(onnx->find("block_size"), std::string::npos);
    EXPECT_NE(onnx->find("conv2_weight_codes"), std::string::npos);
  }
}

// A block-quantized value takes its channels from the layer that reads it; one
// that no Conv or Linear reads cannot be exported, and the error names it.
TEST(Microscaling, OnnxNeedsAReaderForBlockChannels) {
  IntegerModel m;
  int q = m.Add(IntegerNode{.kind = NodeKind::kQuantize, .name = "lonely", .inputs = {0},
                            .block = *BlockFormatFromName("mxfp8")});
  m.Add(IntegerNode{.kind = NodeKind::kFlatten, .name = "flat", .inputs = {q}});
  absl::StatusOr<std::string> onnx = OnnxBytes(m, {2, 8, 3, 3});
  ASSERT_FALSE(onnx.ok());
  EXPECT_NE(onnx.status().message().find("'lonely' has no Conv or Linear reader"), std::string::npos)
      << onnx.status();
}

// A corrupt block size in the file is an error that names it, not a crash.
TEST(Microscaling, CorruptFile) {
  ResidualNet net;
  auto policy = MixedPrecisionPolicy::Parse("default mxfp4 mxfp8\nfirst_last_8bit off\n");
  PrepareQat(net, *policy);
  net.Eval();
  std::shared_ptr<IntegerModel> q = Convert(net);
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/microscaling_corrupt.safetensors";
  ASSERT_TRUE(q->Save(path).ok());
  auto file = LoadSafetensors(path);
  ASSERT_TRUE(file.ok());
  TensorMap tensors = file->tensors;
  tensors["conv1.weight_codes"] = tensors["conv1.weight_codes"].Narrow(0, 0, 3).Contiguous();
  ASSERT_TRUE(SaveSafetensors(path, tensors, file->metadata).ok());
  auto bad = IntegerModel::Load(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("conv1.weight_codes"), std::string::npos) << bad.status();
  // A disabled weight quantizer trains on f32 weights: converting it to blocks
  // would ship what was never trained, so Convert refuses, naming the layer.
  dynamic_cast<Quantizer&>(*net.conv2->weight_quant).SetEnabled(false);
  try {
    Convert(net);
    FAIL() << "expected quanta::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the weight quantizer of conv2 is disabled"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace quanta::quant

// ONNX export: converted CNNs and ResNets (int8, int4 weights, 4-bit activations)
// pass ONNX's checker and strict shape inference; the graph is in QDQ form and
// carries the model's integer weights; a broken graph fails the checker.
#include <map>

#include "gtest/gtest.h"
#include "models/resnet.h"
#include "models/resnet_cifar.h"
#include "models/tiny_cnn.h"
#include "onnx/onnx_pb.h"
#include "quant/convert.h"
#include "quant/onnx_export.h"
#include "quant/prepare.h"

namespace quanta::quant {
namespace {

std::shared_ptr<IntegerModel> Prepared(nn::Module& net, const std::string& policy, const Shape& shape) {
  PrepareReport r = PrepareQat(net, *MixedPrecisionPolicy::Parse(policy));
  Generator gen(1);
  std::vector<Tensor> batches = {Normal(shape, 0, 1, &gen), Normal(shape, 0, 1, &gen)};
  Calibrate(r, net, batches, [&](const Tensor& x) { return dynamic_cast<nn::Layer&>(net).Forward(x); });
  net.Eval();
  return Convert(net);
}

std::map<std::string, int> OpCounts(const onnx::ModelProto& m) {
  std::map<std::string, int> counts;
  for (const auto& n : m.graph().node()) ++counts[n.op_type()];
  return counts;
}

TEST(OnnxExport, CifarResNetInQdqFormPassesTheChecker) {
  Generator gen(2);
  auto net = models::CifarResNet::Make(8, 10, &gen);
  auto q = Prepared(*net, "default 8 8 ema\n", {4, 3, 16, 16});
  auto bytes = OnnxBytes(*q, {1, 3, 16, 16});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_TRUE(CheckOnnx(*bytes).ok());
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(*bytes));
  EXPECT_EQ(m.opset_import(0).version(), 13);
  auto ops = OpCounts(m);
  int convs = 0, linears = 0, conv_biases = 0;
  for (const IntegerNode& n : q->nodes()) {
    convs += n.kind == NodeKind::kConv2d;
    linears += n.kind == NodeKind::kLinear;
    conv_biases += n.kind == NodeKind::kConv2d && n.bias.defined();
  }
  EXPECT_EQ(ops["Conv"], convs);
  EXPECT_EQ(ops["Gemm"], linears);
  EXPECT_GT(conv_biases, 0);  // folded batch norms
  // One residual per block, and each convolution's bias (Note [Bias after the convolution]).
  EXPECT_EQ(ops["Add"], 3 + conv_biases);
  EXPECT_EQ(ops["Pad"], 2);   // option-A shortcuts into stages 2 and 3
  // Every weight is DequantizeLinear'd; every quantized activation is quantized once.
  int quantized_values = 0;
  for (const IntegerNode& n : q->nodes()) quantized_values += n.out_dtype != DType::kF32;
  EXPECT_EQ(ops["QuantizeLinear"], quantized_values);
  EXPECT_GE(ops["DequantizeLinear"], convs + linears);
  // The first conv's weights are the model's integers.
  const IntegerNode* conv1 = nullptr;
  for (const IntegerNode& n : q->nodes()) {
    if (n.name == "conv1") conv1 = &n;
  }
  ASSERT_NE(conv1, nullptr);
  bool found = false;
  for (const auto& t : m.graph().initializer()) {
    if (t.name().find("_conv1_weight_q") == std::string::npos || t.name().find("layer") != std::string::npos) continue;
    found = true;
    std::vector<int32_t> want = conv1->weight.IntRepr();
    ASSERT_EQ(t.raw_data().size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(static_cast<int8_t>(t.raw_data()[i]), want[i]);
  }
  EXPECT_TRUE(found);
}

TEST(OnnxExport, Int4WeightsAnd4BitActivationsAndBottlenecks) {
  Generator gen(3);
  auto net = models::ResNet::Make("fmnist_resnet8", 10, &gen);
  auto q = Prepared(*net, "default 4 4 ema\n", {2, 1, 28, 28});
  auto bytes = OnnxBytes(*q, {1, 1, 28, 28});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(*bytes));
  EXPECT_GT(OpCounts(m)["Clip"], 0);  // 4-bit activation ranges
  auto r50 = models::ResNet::Make("resnet50", 10, &gen);
  auto q50 = Prepared(*r50, "default 8 8 ema\n", {1, 3, 64, 64});
  auto bytes50 = OnnxBytes(*q50, {1, 3, 64, 64});
  ASSERT_TRUE(bytes50.ok()) << bytes50.status();
  onnx::ModelProto m50;
  ASSERT_TRUE(m50.ParseFromString(*bytes50));
  EXPECT_EQ(OpCounts(m50)["Conv"], 53);
  EXPECT_EQ(OpCounts(m50)["MaxPool"], 1);
}

TEST(OnnxExport, TheCheckerRejectsABrokenGraph) {
  auto net = models::TinyCnn(4, 1, 4);
  auto q = Prepared(*net, "default 8 8 ema\n", {2, 1, 12, 12});
  auto bytes = OnnxBytes(*q, {1, 1, 12, 12});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(*bytes));
  m.mutable_graph()->mutable_node(3)->set_input(0, "no_such_value");
  std::string broken;
  ASSERT_TRUE(m.SerializeToString(&broken));
  absl::Status s = CheckOnnx(broken);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("onnx checker"), std::string::npos) << s;
  EXPECT_FALSE(CheckOnnx("not a protobuf").ok());
}

}  // namespace
}  // namespace quanta::quant

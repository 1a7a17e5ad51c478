// Modules: dotted names, registration, modes, state dicts and their errors.
#include "gtest/gtest.h"
#include "nn/layers.h"

namespace quanta::nn {
namespace {

class Block : public Layer {
 public:
  explicit Block(Generator* gen) {
    conv1 = RegisterModule("conv1", std::make_shared<Conv2d>(2, 4, 3, Conv2dOptions{}, false, gen));
    bn1 = RegisterModule("bn1", std::make_shared<BatchNorm2d>(4));
    RegisterParameter("scale", &scale);
  }
  Tensor Forward(const Tensor& x) override { return Mul(Relu(bn1->Forward(conv1->Forward(x))), scale); }
  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<BatchNorm2d> bn1;
  Tensor scale = Ones({1});
};

std::vector<std::string> Names(const std::vector<std::pair<std::string, Tensor*>>& named) {
  std::vector<std::string> out;
  for (const auto& [n, t] : named) out.push_back(n);
  return out;
}

TEST(Module, StableDottedNames) {
  Generator gen(0);
  auto layer1 = std::make_shared<ModuleList>();
  layer1->Append(std::make_shared<Block>(&gen));
  layer1->Append(std::make_shared<Block>(&gen));
  struct Net : Module {
    explicit Net(std::shared_ptr<ModuleList> l) { layer1 = RegisterModule("layer1", l); }
    std::shared_ptr<ModuleList> layer1;
  } net(layer1);
  EXPECT_EQ(Names(net.NamedParameters()),
            (std::vector<std::string>{"layer1.0.scale", "layer1.0.conv1.weight", "layer1.0.bn1.weight",
                                      "layer1.0.bn1.bias", "layer1.1.scale", "layer1.1.conv1.weight",
                                      "layer1.1.bn1.weight", "layer1.1.bn1.bias"}));
  EXPECT_EQ(Names(net.NamedBuffers())[0], "layer1.0.bn1.running_mean");
  EXPECT_EQ(net.NumParameters(), 2 * (1 + 4 * 2 * 9 + 4 + 4));
  EXPECT_EQ(net.StateDict().size(), 8u + 6u);
  for (Tensor& p : net.Parameters()) EXPECT_TRUE(p.requires_grad());
}

TEST(Module, TrainEvalAndApply) {
  Generator gen(1);
  auto block = std::make_shared<Block>(&gen);
  Sequential seq(block, std::make_shared<Dropout>(0.5, &gen));
  EXPECT_TRUE(seq.is_training());
  seq.Eval();
  int count = 0;
  seq.Apply([&](Module& m) {
    EXPECT_FALSE(m.is_training());
    ++count;
  });
  EXPECT_EQ(count, 5);  // sequential, block, conv, bn, dropout
  Tensor x = Ones({1, 2, 5, 5});
  EXPECT_EQ(seq.Forward(x).shape(), (Shape{1, 4, 3, 3}));
  // In eval mode dropout is the identity and BN uses running statistics (0 and 1).
  Tensor expected = Relu(quanta::Conv2d(x, block->conv1->weight));
  std::vector<float> got = seq.Forward(x).ToVector<float>(), want = Mul(expected, 1 / std::sqrt(1 + 1e-5)).ToVector<float>();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5);
}

TEST(Module, LoadStateDictReportsKeysByName) {
  Generator gen(2);
  Block a(&gen), b(&gen);
  EXPECT_TRUE(b.LoadStateDict(a.StateDict()).ok());
  EXPECT_EQ(b.conv1->weight.ToVector<float>(), a.conv1->weight.ToVector<float>());
  TensorMap state = a.StateDict();
  state.erase("bn1.bias");
  state["extra"] = Zeros({1});
  state["conv1.weight"] = Zeros({4, 2, 3, 1});
  absl::Status s = b.LoadStateDict(state);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(std::string(s.message()),
            "load_state_dict: mis-shaped keys: conv1.weight (expected f32[4, 2, 3, 3], got f32[4, 2, 3, 1]); "
            "missing keys: bn1.bias; unexpected keys: extra");
  // Nothing was loaded by the failed call.
  EXPECT_EQ(b.conv1->weight.ToVector<float>(), a.conv1->weight.ToVector<float>());
  state["conv1.weight"] = a.conv1->weight;
  EXPECT_TRUE(b.LoadStateDict(state, /*strict=*/false).ok());
}

}  // namespace
}  // namespace quanta::nn

namespace quanta::nn {
namespace {

// Freeze: inference keeps working (conv weights come from oneDNN's cache the
// second time), and an optimizer step into frozen weights is refused by name.
TEST(Module, FreezeMakesParametersConstant) {
  Generator gen(3);
  auto net = std::make_shared<Sequential>(std::make_shared<Conv2d>(2, 4, 3, Conv2dOptions{}, true, &gen),
                                          std::make_shared<Flatten>(), std::make_shared<Linear>(4, 2, true, &gen));
  Tensor x = Normal({1, 2, 3, 3}, 0, 1, &gen);
  Tensor before = net->Forward(x);
  net->Freeze();
  EXPECT_EQ(net->Forward(x).ToVector<float>(), before.ToVector<float>());
  EXPECT_EQ(net->Forward(x).ToVector<float>(), before.ToVector<float>());
  for (auto& [name, p] : net->NamedParameters()) EXPECT_TRUE(p->storage()->constant()) << name;
  Tensor w = net->NamedParameters()[0].second->Detach();
  EXPECT_THROW(AddInplace(w, OnesLike(w)), Error);
}

}  // namespace
}  // namespace quanta::nn

#include "quant/fp8.h"

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "nn/layers.h"
#include "quant/quantizer.h"

namespace quanta::quant {
namespace {

// A Linear's or Conv2d's input quantizer: 1 x tile groups along the reduction dim.
class Fp8ActivationQuantizer : public nn::Layer {
 public:
  Fp8ActivationQuantizer(int64_t tile, DType element) : tile_(tile), element_(element) {}
  Tensor Forward(const Tensor& x) override { return Fp8QuantizeTiles(x, LayerReductionDim(x), tile_, element_); }

 private:
  int64_t tile_;
  DType element_;
};

// A Linear's or Conv2d's weight quantizer: block x block groups of (out, in * kh * kw).
class Fp8WeightQuantizer : public nn::Layer {
 public:
  Fp8WeightQuantizer(int64_t block, DType element) : block_(block), element_(element) {}
  Tensor Forward(const Tensor& w) override { return Fp8QuantizeBlocks(w, block_, element_); }

 private:
  int64_t block_;
  DType element_;
};

}  // namespace

Tensor Fp8QuantizeTiles(const Tensor& x, int64_t dim, int64_t tile, DType element) {
  QUANTA_CHECK(tile >= 1, "fp8: tile ", tile, " for ", x.Describe());
  return BlockFakeQuantizeAlong(x, dim, BlockFormat::Tile(tile, element));
}

Tensor Fp8QuantizeBlocks(const Tensor& w, int64_t block, DType element) {
  QUANTA_CHECK(w.dim() >= 2 && block >= 1, "fp8: weight ", w.Describe(), " has no ", block, " x ", block, " blocks");
  const int64_t out = w.size(0), rest = w.numel() / out;
  // A matrix smaller than a block is one block of its own size.
  return BlockFakeQuantizeWeight(w, BlockFormat{element, std::min(block, out), std::min(block, rest), DType::kF32});
}

std::string Fp8Report::ToString() const {
  return absl::StrCat("fp8 training: ", fp8_layers.size(), " layers in FP8; f32: ",
                      kept_layers.empty() ? "none" : absl::StrJoin(kept_layers, ", "));
}

Fp8Report PrepareFp8Training(nn::Module& model, const Fp8Recipe& recipe) {
  QUANTA_CHECK(recipe.forward == DType::kF8E4M3 || recipe.forward == DType::kF8E5M2,
               "PrepareFp8Training: forward dtype ", Name(recipe.forward), " is not f8_e4m3 or f8_e5m2");
  QUANTA_CHECK(recipe.gradient == DType::kF8E4M3 || recipe.gradient == DType::kF8E5M2 || recipe.gradient == DType::kF32,
               "PrepareFp8Training: gradient dtype ", Name(recipe.gradient), " is not f8_e4m3, f8_e5m2 or f32");
  QUANTA_CHECK(recipe.tile >= 1 && recipe.block >= 1, "PrepareFp8Training: tile ", recipe.tile, " and block ",
               recipe.block, " must be positive");
  std::vector<std::pair<std::string, nn::QuantizableLayer*>> layers;
  for (auto& [name, m] : model.NamedModules()) {
    if (auto* q = dynamic_cast<nn::QuantizableLayer*>(m)) {
      QUANTA_CHECK(!q->input_quant && !q->weight_quant && !q->output_grad_quant, "PrepareFp8Training: ", name,
                   " already carries quantizers (QAT and FP8 training do not stack)");
      layers.emplace_back(name, q);
    }
  }
  Fp8Report report;
  for (size_t i = 0; i < layers.size(); ++i) {
    auto& [name, layer] = layers[i];
    if ((recipe.keep_first && i == 0) || (recipe.keep_last && i + 1 == layers.size())) {
      report.kept_layers.push_back(name);
      continue;
    }
    // Not registered as children: they hold no state, and RemoveFp8Training
    // takes them off again.
    layer->input_quant = std::make_shared<Fp8ActivationQuantizer>(recipe.tile, recipe.forward);
    layer->weight_quant = std::make_shared<Fp8WeightQuantizer>(recipe.block, recipe.forward);
    if (recipe.gradient != DType::kF32) {
      layer->output_grad_quant = [tile = recipe.tile, element = recipe.gradient](const Tensor& g) {
        NoGradGuard no_grad;
        return Fp8QuantizeTiles(g, LayerReductionDim(g), tile, element);
      };
    }
    report.fp8_layers.push_back(name);
  }
  return report;
}

void RemoveFp8Training(nn::Module& model) {
  for (auto& [name, m] : model.NamedModules()) {
    auto* q = dynamic_cast<nn::QuantizableLayer*>(m);
    if (q == nullptr || !dynamic_cast<Fp8ActivationQuantizer*>(q->input_quant.get())) continue;
    q->input_quant.reset();
    q->weight_quant.reset();
    q->output_grad_quant = nullptr;
  }
}

}  // namespace quanta::quant

// Module: named parameters, buffers and children with stable dotted names
// ("layer1.0.conv1.weight"), train/eval, device moves, state dicts. Layer adds
// the single-input Forward that Sequential chains. Not here: the layers
// themselves (nn/layers.h) and their math (nn/functional.h).
//
//   class Block : public Layer {
//    public:
//     Block() {
//       fc = RegisterModule("fc", std::make_shared<Linear>(4, 4));
//       RegisterParameter("scale", &scale);
//     }
//     Tensor Forward(const Tensor& x) override { return Mul(fc->Forward(x), scale); }
//     std::shared_ptr<Linear> fc;
//     Tensor scale = Ones({4});
//   };
//   auto net = std::make_shared<Sequential>(std::make_shared<Block>(), std::make_shared<ReLU>());
//   for (auto& [name, p] : net->NamedParameters()) ...   // "0.fc.weight", "0.scale", ...
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/tensor.h"

namespace quanta {

using TensorMap = std::map<std::string, Tensor>;

namespace nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // ---- registration (from constructors; one line each) -------------------------
  // The module keeps a pointer to the member: it must live as long as the module.
  void RegisterParameter(const std::string& name, Tensor* parameter);
  // A resizable buffer's shape depends on the data (an observer's per-channel
  // range): LoadStateDict takes the saved shape instead of refusing it.
  void RegisterBuffer(const std::string& name, Tensor* buffer, bool resizable = false);
  template <typename M>
  std::shared_ptr<M> RegisterModule(const std::string& name, std::shared_ptr<M> module) {
    AddChild(name, module);
    return module;
  }

  // Puts module in the place of the child `name` (a layer swapped for its integer
  // form); throws quanta::Error when there is no such child.
  void ReplaceModule(const std::string& name, std::shared_ptr<Module> module);

  // ---- introspection (recursive, registration order, dotted names) ------------
  std::vector<std::pair<std::string, Tensor*>> NamedParameters() const;
  std::vector<std::pair<std::string, Tensor*>> NamedBuffers() const;
  std::vector<Tensor> Parameters() const;  // copies share storage and gradients
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> NamedChildren() const;
  // This module ("") and every descendant, parents first, with dotted names.
  std::vector<std::pair<std::string, Module*>> NamedModules();
  int64_t NumParameters() const;

  // ---- modes and moves -----------------------------------------------------------
  void Train(bool training = true);
  void Eval() { Train(false); }
  // Inference only from now on: every parameter and buffer goes into constant
  // storage (Note [Constant storage] in core/storage.h), so oneDNN keeps the
  // weights in its own layout instead of reordering them each call. Training
  // the module afterwards throws at the first in-place update.
  void Freeze();
  bool is_training() const { return training_; }
  // Moves every parameter and buffer; create optimizers after moving.
  void To(const Device& device);
  // Casts every floating parameter and buffer (f64 for gradchecks, bf16 to save memory).
  void To(DType dtype);
  // Calls fn on this module and every descendant, parents first.
  void Apply(const std::function<void(Module&)>& fn);

  // ---- state -------------------------------------------------------------------------
  // Parameters and buffers by dotted name (tensors share storage with the module).
  TensorMap StateDict() const;
  // Copies values in. Missing, unexpected and mis-shaped keys are reported by name
  // (InvalidArgument); with strict=false only mis-shaped keys fail.
  absl::Status LoadStateDict(const TensorMap& state, bool strict = true);

 private:
  void AddChild(const std::string& name, std::shared_ptr<Module> child);
  void Collect(const std::string& prefix, bool parameters,
               std::vector<std::pair<std::string, Tensor*>>* out) const;

  std::vector<std::pair<std::string, Tensor*>> parameters_;
  std::vector<std::pair<std::string, Tensor*>> buffers_;
  std::vector<const Tensor*> resizable_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// A module with one input and one output: what Sequential chains.
class Layer : public Module {
 public:
  virtual Tensor Forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return Forward(x); }
};

// Applies its layers in order; children are named "0", "1", ...
class Sequential : public Layer {
 public:
  Sequential() = default;
  template <typename... Layers>
  explicit Sequential(std::shared_ptr<Layers>... layers) {
    (Append(std::move(layers)), ...);
  }
  void Append(std::shared_ptr<Layer> layer);
  Tensor Forward(const Tensor& x) override;
  size_t size() const { return layers_.size(); }
  Layer& operator[](size_t i) { return *layers_.at(i); }

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
};

// Holds modules under "0", "1", ... without calling them.
class ModuleList : public Module {
 public:
  void Append(std::shared_ptr<Module> module);
  size_t size() const { return modules_.size(); }
  template <typename M = Module>
  std::shared_ptr<M> at(size_t i) const { return std::dynamic_pointer_cast<M>(modules_.at(i)); }

 private:
  std::vector<std::shared_ptr<Module>> modules_;
};

}  // namespace nn
}  // namespace quanta

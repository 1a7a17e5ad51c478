// Module bookkeeping: registration, recursive traversal, state dicts.
#include "nn/module.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/error.h"
#include "core/grad_mode.h"

namespace quanta::nn {

namespace {
void CheckName(const std::string& name) {
  QUANTA_CHECK(!name.empty() && name.find('.') == std::string::npos,
               "module: name \"", name, "\" must be non-empty and contain no '.'");
}
}  // namespace

void Module::RegisterParameter(const std::string& name, Tensor* parameter) {
  CheckName(name);
  QUANTA_CHECK(parameter != nullptr && parameter->defined(), "module: parameter ", name, " is undefined");
  if (!parameter->requires_grad()) parameter->SetRequiresGrad();
  parameters_.emplace_back(name, parameter);
}

void Module::RegisterBuffer(const std::string& name, Tensor* buffer, bool resizable) {
  CheckName(name);
  QUANTA_CHECK(buffer != nullptr && buffer->defined(), "module: buffer ", name, " is undefined");
  buffers_.emplace_back(name, buffer);
  if (resizable) resizable_.push_back(buffer);
}

void Module::AddChild(const std::string& name, std::shared_ptr<Module> child) {
  CheckName(name);
  QUANTA_CHECK(child != nullptr, "module: child ", name, " is null");
  children_.emplace_back(name, std::move(child));
}

void Module::ReplaceModule(const std::string& name, std::shared_ptr<Module> module) {
  QUANTA_CHECK(module != nullptr, "module: replacing ", name, " with null");
  for (auto& [n, child] : children_) {
    if (n == name) {
      child = std::move(module);
      return;
    }
  }
  QUANTA_CHECK(false, "module: no child named ", name, " to replace");
}

void Module::Collect(const std::string& prefix, bool parameters,
                     std::vector<std::pair<std::string, Tensor*>>* out) const {
  for (const auto& [name, t] : parameters ? parameters_ : buffers_) out->emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->Collect(prefix + name + ".", parameters, out);
}

std::vector<std::pair<std::string, Tensor*>> Module::NamedParameters() const {
  std::vector<std::pair<std::string, Tensor*>> out;
  Collect("", true, &out);
  return out;
}

std::vector<std::pair<std::string, Tensor*>> Module::NamedBuffers() const {
  std::vector<std::pair<std::string, Tensor*>> out;
  Collect("", false, &out);
  return out;
}

std::vector<Tensor> Module::Parameters() const {
  std::vector<Tensor> out;
  for (const auto& [name, t] : NamedParameters()) out.push_back(*t);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::NamedChildren() const {
  return children_;
}

std::vector<std::pair<std::string, Module*>> Module::NamedModules() {
  std::vector<std::pair<std::string, Module*>> out = {{"", this}};
  for (auto& [name, child] : children_) {
    for (auto& [sub, m] : child->NamedModules()) out.emplace_back(sub.empty() ? name : name + "." + sub, m);
  }
  return out;
}

int64_t Module::NumParameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : NamedParameters()) n += t->numel();
  return n;
}

void Module::Freeze() {
  for (const auto& [name, t] : NamedParameters()) t->storage()->MarkConstant();
  for (const auto& [name, t] : NamedBuffers()) t->storage()->MarkConstant();
}

void Module::Train(bool training) {
  Apply([training](Module& m) { m.training_ = training; });
}

void Module::To(const Device& device) {
  NoGradGuard no_grad;
  Apply([&](Module& m) {
    for (auto& [name, p] : m.parameters_) {
      *p = p->Detach().To(device).Detach();
      p->SetRequiresGrad();
    }
    for (auto& [name, b] : m.buffers_) *b = b->To(device);
  });
}

void Module::To(DType dtype) {
  QUANTA_CHECK(IsFloating(dtype), "module: cannot cast parameters to ", Name(dtype));
  NoGradGuard no_grad;
  Apply([&](Module& m) {
    for (auto& [name, p] : m.parameters_) {
      *p = p->Detach().To(dtype).Detach();
      p->SetRequiresGrad();
    }
    for (auto& [name, b] : m.buffers_) {
      if (IsFloating(b->dtype())) *b = b->To(dtype);
    }
  });
}

void Module::Apply(const std::function<void(Module&)>& fn) {
  fn(*this);
  for (auto& [name, child] : children_) child->Apply(fn);
}

TensorMap Module::StateDict() const {
  TensorMap out;
  for (const auto& [name, t] : NamedParameters()) out[name] = t->Detach();
  for (const auto& [name, t] : NamedBuffers()) out[name] = t->Detach();
  return out;
}

absl::Status Module::LoadStateDict(const TensorMap& state, bool strict) {
  std::vector<std::pair<std::string, Tensor*>> targets = NamedParameters();
  for (auto& b : NamedBuffers()) targets.push_back(b);
  std::vector<std::string> missing, mismatched, unexpected;
  std::set<std::string> known;
  std::set<const Tensor*> resizable;
  Apply([&](Module& m) { resizable.insert(m.resizable_.begin(), m.resizable_.end()); });
  for (const auto& [name, t] : targets) {
    known.insert(name);
    auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
    } else if (it->second.dtype() != t->dtype() || (it->second.shape() != t->shape() && !resizable.count(t))) {
      mismatched.push_back(absl::StrCat(name, " (expected ", t->Describe(), ", got ", it->second.Describe(), ")"));
    }
  }
  for (const auto& [name, t] : state) {
    if (!known.count(name)) unexpected.push_back(name);
  }
  std::vector<std::string> problems;
  if (!mismatched.empty()) problems.push_back("mis-shaped keys: " + absl::StrJoin(mismatched, ", "));
  if (strict && !missing.empty()) problems.push_back("missing keys: " + absl::StrJoin(missing, ", "));
  if (strict && !unexpected.empty()) problems.push_back("unexpected keys: " + absl::StrJoin(unexpected, ", "));
  if (!problems.empty()) {
    return absl::InvalidArgumentError("load_state_dict: " + absl::StrJoin(problems, "; "));
  }
  NoGradGuard no_grad;
  for (auto& [name, t] : targets) {
    auto it = state.find(name);
    if (it == state.end()) continue;
    if (it->second.shape() != t->shape()) {
      *t = it->second.To(t->device()).Clone();  // a resizable buffer takes the saved shape
    } else {
      t->CopyFrom(it->second);
    }
  }
  return absl::OkStatus();
}

void Sequential::Append(std::shared_ptr<Layer> layer) {
  RegisterModule(std::to_string(layers_.size()), layer);
  layers_.push_back(std::move(layer));
}

Tensor Sequential::Forward(const Tensor& x) {
  Tensor y = x;
  for (auto& layer : layers_) y = layer->Forward(y);
  return y;
}

void ModuleList::Append(std::shared_ptr<Module> module) {
  RegisterModule(std::to_string(modules_.size()), module);
  modules_.push_back(std::move(module));
}

}  // namespace quanta::nn

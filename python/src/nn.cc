// quanta.nn, quanta.optim and quanta.models: modules and layers, losses,
// optimizers with parameter groups, schedules, checkpoints, safetensors files
// and the model registry.
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/generator.h"
#include "models/bert.h"
#include "models/registry.h"
#include "nn/checkpoint.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "python/src/common.h"

namespace quanta::python {
namespace {

using nn::Layer;
using nn::Module;

py::list Named(const std::vector<std::pair<std::string, Tensor*>>& named) {
  py::list out;
  for (const auto& [name, t] : named) out.append(py::make_tuple(name, *t));
  return out;
}

TensorMap ToTensorMap(const py::dict& d) {
  TensorMap out;
  for (auto [k, v] : d) out[k.cast<std::string>()] = v.cast<Tensor>();
  return out;
}

py::dict ToDict(const TensorMap& m) {
  py::dict d;
  for (const auto& [k, v] : m) d[py::str(k)] = v;
  return d;
}

// Parameters as PyTorch takes them: an iterable of tensors, or of dicts
// {"params": [...], "lr": x or "lr_mult": x, "weight_decay": x, "name": s}
// (a group's "lr" becomes its multiple of the optimizer's lr).
std::vector<nn::ParamGroup> Groups(py::iterable params, double lr) {
  std::vector<nn::ParamGroup> groups;
  nn::ParamGroup loose;
  for (py::handle item : params) {
    if (py::isinstance<py::dict>(item)) {
      py::dict d = py::reinterpret_borrow<py::dict>(item);
      nn::ParamGroup g;
      for (py::handle p : d["params"]) g.params.push_back(p.cast<Tensor>());
      if (d.contains("lr_mult")) g.lr_mult = d["lr_mult"].cast<double>();
      if (d.contains("lr")) {
        QUANTA_CHECK(lr > 0, "optimizer: a group's lr needs the optimizer's lr > 0");
        g.lr_mult = d["lr"].cast<double>() / lr;
      }
      if (d.contains("weight_decay") && !d["weight_decay"].is_none()) g.weight_decay = d["weight_decay"].cast<double>();
      if (d.contains("name")) g.name = d["name"].cast<std::string>();
      groups.push_back(std::move(g));
    } else {
      loose.params.push_back(item.cast<Tensor>());
    }
  }
  QUANTA_CHECK(groups.empty() || loose.params.empty(), "optimizer: pass tensors or parameter groups, not both");
  if (groups.empty()) groups.push_back(std::move(loose));
  return groups;
}

Conv2dOptions ConvOptions(int64_t stride, int64_t padding, int64_t dilation, int64_t groups) {
  return Conv2dOptions{.stride = {stride, stride}, .padding = {padding, padding}, .dilation = {dilation, dilation},
                       .groups = groups};
}

// Layers take an optional seed: their initial weights from Generator(seed),
// else from the default generator (quanta.manual_seed).
template <typename F>
auto WithSeed(std::optional<uint64_t> seed, F make) {
  if (!seed) return make(nullptr);
  Generator gen(*seed);
  return make(&gen);
}

// Note [Layers written in Python]: a Python subclass of quanta.nn.Layer is a
// PyLayer. Its forward runs the Python method (taking the GIL back: __call__
// released it), and assigning attributes registers what PyTorch's nn.Module
// would: a Module becomes a child (and stays in the instance's __dict__, which
// keeps the Python object alive as long as its parent's), a Tensor that
// requires grad a parameter. Parameters live here, in stable slots that the
// C++ registry points to; reading self.name fetches the slot, so what To() or
// an optimizer puts there is what forward sees.
class PyLayer : public Layer {
 public:
  Tensor Forward(const Tensor& x) override {
    py::gil_scoped_acquire gil;
    py::function forward = py::get_override(static_cast<const Layer*>(this), "forward");
    QUANTA_CHECK(forward, "Layer: a Python layer needs a forward(self, x) method, and its Python object must still "
                          "exist (keep a reference to it, or assign it to an attribute of its parent)");
    return forward(x).cast<Tensor>();
  }
  void SetParameter(const std::string& name, const Tensor& t, bool buffer) {
    auto it = slots_.find(name);
    if (it != slots_.end()) {
      *it->second = t;
      if (!buffer) it->second->SetRequiresGrad();
      return;
    }
    owned_.push_back(t);
    if (buffer) {
      RegisterBuffer(name, &owned_.back());
    } else {
      RegisterParameter(name, &owned_.back());
    }
    slots_[name] = &owned_.back();
  }
  void SetChild(const std::string& name, std::shared_ptr<Module> child) {
    for (const auto& [n, c] : NamedChildren()) {
      if (n == name) return ReplaceModule(name, std::move(child));
    }
    RegisterModule(name, std::move(child));
  }
  const Tensor* Find(const std::string& name) const {
    auto it = slots_.find(name);
    return it == slots_.end() ? nullptr : it->second;
  }

 private:
  std::deque<Tensor> owned_;  // deque: pointers into it stay valid as it grows
  std::map<std::string, Tensor*> slots_;
};

}  // namespace

py::list GroupsToList(const std::vector<nn::ParamGroup>& groups) {
  py::list out;
  for (const nn::ParamGroup& g : groups) {
    py::dict d;
    d["params"] = py::cast(g.params);
    d["lr_mult"] = g.lr_mult;
    d["weight_decay"] = g.weight_decay ? py::cast(*g.weight_decay) : py::none();
    d["name"] = g.name;
    out.append(d);
  }
  return out;
}

void BindNn(py::module_& m) {
  py::module_ nn = m.def_submodule("nn", "Modules, layers, losses, checkpoints");
  py::class_<Module, std::shared_ptr<Module>>(nn, "Module")
      .def("parameters", &Module::Parameters, "Tensors sharing storage and gradients with the module's")
      .def("named_parameters", [](const Module& mod) { return Named(mod.NamedParameters()); })
      .def("named_buffers", [](const Module& mod) { return Named(mod.NamedBuffers()); })
      .def("named_children", &Module::NamedChildren)
      .def("named_modules", [](Module& mod) {
        py::list out;
        for (const auto& [name, child] : mod.NamedModules()) {
          out.append(py::make_tuple(name, py::cast(child, py::return_value_policy::reference)));
        }
        return out;
      }, py::keep_alive<0, 1>())
      .def("num_parameters", &Module::NumParameters)
      .def("train", [](Module& mod, bool mode) -> Module& {
        mod.Train(mode);
        return mod;
      }, py::arg("mode") = true, py::return_value_policy::reference)
      .def("eval", [](Module& mod) -> Module& {
        mod.Eval();
        return mod;
      }, py::return_value_policy::reference)
      .def_property_readonly("training", &Module::is_training)
      .def("freeze", &Module::Freeze)
      .def("state_dict", [](const Module& mod) { return ToDict(mod.StateDict()); })
      .def("load_state_dict", [](Module& mod, py::dict state, bool strict) {
        RaiseIfError(mod.LoadStateDict(ToTensorMap(state), strict));
      }, py::arg("state_dict"), py::arg("strict") = true);

  py::object object_setattr = py::module_::import("builtins").attr("object").attr("__setattr__");
  py::class_<Layer, PyLayer, Module, std::shared_ptr<Layer>>(
      nn, "Layer", "A Module with forward(x); subclass it in Python as PyTorch's nn.Module (Note [Layers written in Python])")
      .def(py::init<>())
      .def("__setattr__", [object_setattr](py::object self, const std::string& name, py::object value) {
        auto* layer = dynamic_cast<PyLayer*>(self.cast<Layer*>());
        if (layer != nullptr && py::isinstance<Module>(value)) {
          layer->SetChild(name, value.cast<std::shared_ptr<Module>>());
        } else if (layer != nullptr && py::isinstance<Tensor>(value) &&
                   (value.cast<Tensor>().requires_grad() || layer->Find(name) != nullptr)) {
          layer->SetParameter(name, value.cast<Tensor>(), /*buffer=*/false);
          return;
        }
        object_setattr(self, name, value);
      })
      .def("__getattr__", [](py::object self, const std::string& name) -> py::object {
        auto* layer = dynamic_cast<PyLayer*>(self.cast<Layer*>());
        const Tensor* t = layer ? layer->Find(name) : nullptr;
        if (t == nullptr) throw py::attribute_error("'" + std::string(py::str(self.get_type().attr("__name__"))) +
                                                    "' object has no attribute '" + name + "'");
        return py::cast(*t);
      })
      .def("register_buffer", [](Layer& self, const std::string& name, const Tensor& t) {
        auto* layer = dynamic_cast<PyLayer*>(&self);
        QUANTA_CHECK(layer != nullptr, "register_buffer: only layers written in Python take buffers this way");
        layer->SetParameter(name, t, /*buffer=*/true);
      }, py::arg("name"), py::arg("tensor"))
      .def("forward", [](Layer& l, const Tensor& x) {
        py::gil_scoped_release release;
        return l.Forward(x);
      })
      .def("__call__", [](Layer& l, const Tensor& x) {
        py::gil_scoped_release release;
        return l.Forward(x);
      });
  py::class_<nn::QuantizableLayer, Layer, std::shared_ptr<nn::QuantizableLayer>>(nn, "QuantizableLayer");
  py::class_<nn::Linear, nn::QuantizableLayer, std::shared_ptr<nn::Linear>>(nn, "Linear")
      .def(py::init([](int64_t in, int64_t out, bool bias, std::optional<uint64_t> seed) {
             return WithSeed(seed, [&](Generator* g) { return std::make_shared<nn::Linear>(in, out, bias, g); });
           }),
           py::arg("in_features"), py::arg("out_features"), py::arg("bias") = true, py::arg("seed") = py::none())
      .def_readwrite("weight", &nn::Linear::weight)
      .def_readwrite("bias", &nn::Linear::bias);
  py::class_<nn::Conv2d, nn::QuantizableLayer, std::shared_ptr<nn::Conv2d>>(nn, "Conv2d")
      .def(py::init([](int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, int64_t dilation,
                       int64_t groups, bool bias, std::optional<uint64_t> seed) {
             return WithSeed(seed, [&](Generator* g) {
               return std::make_shared<nn::Conv2d>(in, out, k, ConvOptions(stride, padding, dilation, groups), bias, g);
             });
           }),
           py::arg("in_channels"), py::arg("out_channels"), py::arg("kernel_size"), py::arg("stride") = 1,
           py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("bias") = true,
           py::arg("seed") = py::none())
      .def_readwrite("weight", &nn::Conv2d::weight)
      .def_readwrite("bias", &nn::Conv2d::bias);
  py::class_<nn::BatchNorm2d, Layer, std::shared_ptr<nn::BatchNorm2d>>(nn, "BatchNorm2d")
      .def(py::init<int64_t, double, double, bool>(), py::arg("num_features"), py::arg("eps") = 1e-5,
           py::arg("momentum") = 0.1, py::arg("affine") = true)
      .def_readwrite("weight", &nn::BatchNorm2d::weight)
      .def_readwrite("bias", &nn::BatchNorm2d::bias)
      .def_readwrite("running_mean", &nn::BatchNorm2d::running_mean)
      .def_readwrite("running_var", &nn::BatchNorm2d::running_var);
  py::class_<nn::LayerNorm, Layer, std::shared_ptr<nn::LayerNorm>>(nn, "LayerNorm")
      .def(py::init<Shape, double, bool>(), py::arg("normalized_shape"), py::arg("eps") = 1e-5,
           py::arg("elementwise_affine") = true);
  py::class_<nn::ReLU, Layer, std::shared_ptr<nn::ReLU>>(nn, "ReLU").def(py::init<>());
  py::class_<nn::GELU, Layer, std::shared_ptr<nn::GELU>>(nn, "GELU").def(py::init<>());
  py::class_<nn::Identity, Layer, std::shared_ptr<nn::Identity>>(nn, "Identity").def(py::init<>());
  py::class_<nn::Flatten, Layer, std::shared_ptr<nn::Flatten>>(nn, "Flatten")
      .def(py::init<int64_t, int64_t>(), py::arg("start_dim") = 1, py::arg("end_dim") = -1);
  py::class_<nn::MaxPool2d, Layer, std::shared_ptr<nn::MaxPool2d>>(nn, "MaxPool2d")
      .def(py::init([](int64_t kernel, std::optional<int64_t> stride, int64_t padding) {
             int64_t s = stride.value_or(kernel);
             return std::make_shared<nn::MaxPool2d>(
                 Pool2dOptions{.kernel = {kernel, kernel}, .stride = {s, s}, .padding = {padding, padding}});
           }),
           py::arg("kernel_size"), py::arg("stride") = py::none(), py::arg("padding") = 0);
  py::class_<nn::AdaptiveAvgPool2d, Layer, std::shared_ptr<nn::AdaptiveAvgPool2d>>(nn, "AdaptiveAvgPool2d")
      .def(py::init([](std::pair<int64_t, int64_t> size) {
             return std::make_shared<nn::AdaptiveAvgPool2d>(size.first, size.second);
           }),
           py::arg("output_size"))
      .def(py::init([](int64_t size) { return std::make_shared<nn::AdaptiveAvgPool2d>(size, size); }),
           py::arg("output_size"));
  // dynamic_attr: quanta/__init__.py keeps the Python layers it holds alive.
  py::class_<nn::Sequential, Layer, std::shared_ptr<nn::Sequential>>(nn, "Sequential", py::dynamic_attr())
      .def(py::init([](py::args layers) {
        auto s = std::make_shared<nn::Sequential>();
        for (py::handle l : layers) s->Append(l.cast<std::shared_ptr<Layer>>());
        return s;
      }))
      .def("append", &nn::Sequential::Append)
      .def("__len__", &nn::Sequential::size)
      .def("__getitem__", [](nn::Sequential& s, size_t i) -> Layer& {
        QUANTA_CHECK(i < s.size(), "Sequential: index ", i, " of ", s.size(), " layers");
        return s[i];
      }, py::return_value_policy::reference_internal);

  // losses (nn.functional in PyTorch)
  py::module_ f = nn.def_submodule("functional", "Losses and functions");
  f.def("cross_entropy", [](const Tensor& logits, const Tensor& targets, double label_smoothing, int64_t ignore_index) {
        return quanta::CrossEntropy(logits, targets, {.label_smoothing = label_smoothing, .ignore_index = ignore_index});
      },
      py::arg("input"), py::arg("target"), py::arg("label_smoothing") = 0.0, py::arg("ignore_index") = -100);
  f.def("mse_loss", &quanta::MseLoss, py::arg("input"), py::arg("target"));
  f.def("binary_cross_entropy_with_logits", &quanta::BceWithLogits, py::arg("input"), py::arg("target"));
  f.def("distillation_loss", &quanta::DistillationLoss, py::arg("student_logits"), py::arg("teacher_logits"),
        py::arg("temperature"));
  f.def("linear", [](const Tensor& x, const Tensor& w, std::optional<Tensor> b) { return quanta::Linear(x, w, b ? *b : Tensor()); },
        py::arg("input"), py::arg("weight"), py::arg("bias") = py::none());

  // files
  nn.def("save_checkpoint", [](const std::string& path, const Module& model, const nn::Optimizer* opt,
                               std::map<std::string, std::string> metadata) {
           RaiseIfError(nn::SaveCheckpoint(path, model, opt, metadata));
         },
         py::arg("path"), py::arg("model"), py::arg("optimizer") = nullptr,
         py::arg("metadata") = std::map<std::string, std::string>{},
         "Model (and optimizer) state in one safetensors file, written to a temporary file and renamed");
  nn.def("load_checkpoint", [](const std::string& path, Module& model, nn::Optimizer* opt) {
           return ValueOrRaise(nn::LoadCheckpoint(path, model, opt));
         },
         py::arg("path"), py::arg("model"), py::arg("optimizer") = nullptr, "Restores them; returns the metadata");
  nn.def("save_file", [](py::dict tensors, const std::string& path, std::map<std::string, std::string> metadata) {
           RaiseIfError(SaveSafetensors(path, ToTensorMap(tensors), metadata));
         },
         py::arg("tensors"), py::arg("path"), py::arg("metadata") = std::map<std::string, std::string>{});
  nn.def("load_file", [](const std::string& path) {
           Safetensors file = ValueOrRaise(LoadSafetensors(path));
           return py::make_tuple(ToDict(file.tensors), file.metadata);
         },
         py::arg("path"), "(tensors, metadata) of a safetensors file");

  // optimizers and schedules
  py::module_ optim = m.def_submodule("optim", "Optimizers and learning-rate schedules");
  py::class_<nn::Optimizer>(optim, "Optimizer")
      .def("zero_grad", &nn::Optimizer::ZeroGrad)
      .def("step", &nn::Optimizer::Step, py::call_guard<py::gil_scoped_release>())
      .def_property("lr", &nn::Optimizer::lr, &nn::Optimizer::SetLr)
      .def_property_readonly("steps", &nn::Optimizer::steps)
      .def_property_readonly("param_groups", [](const nn::Optimizer& o) { return GroupsToList(o.groups()); })
      .def("state_dict", [](const nn::Optimizer& o) { return ToDict(o.StateDict()); })
      .def("load_state_dict", [](nn::Optimizer& o, py::dict state) { RaiseIfError(o.LoadStateDict(ToTensorMap(state))); });
  py::class_<nn::SGD, nn::Optimizer>(optim, "SGD")
      .def(py::init([](py::iterable params, double lr, double momentum, double dampening, double weight_decay,
                       bool nesterov) {
             return std::make_unique<nn::SGD>(Groups(params, lr), nn::SgdOptions{.lr = lr, .momentum = momentum,
                                                                                 .dampening = dampening,
                                                                                 .nesterov = nesterov,
                                                                                 .weight_decay = weight_decay});
           }),
           py::arg("params"), py::arg("lr"), py::arg("momentum") = 0.0, py::arg("dampening") = 0.0,
           py::arg("weight_decay") = 0.0, py::arg("nesterov") = false);
  auto adam_options = [](double lr, std::pair<double, double> betas, double eps, double wd) {
    return nn::AdamOptions{.lr = lr, .beta1 = betas.first, .beta2 = betas.second, .eps = eps, .weight_decay = wd};
  };
  py::class_<nn::Adam, nn::Optimizer>(optim, "Adam")
      .def(py::init([=](py::iterable params, double lr, std::pair<double, double> betas, double eps, double wd) {
             return std::make_unique<nn::Adam>(Groups(params, lr), adam_options(lr, betas, eps, wd));
           }),
           py::arg("params"), py::arg("lr") = 1e-3, py::arg("betas") = std::pair{0.9, 0.999}, py::arg("eps") = 1e-8,
           py::arg("weight_decay") = 0.0);
  py::class_<nn::AdamW, nn::Adam>(optim, "AdamW")
      .def(py::init([=](py::iterable params, double lr, std::pair<double, double> betas, double eps, double wd) {
             return std::make_unique<nn::AdamW>(Groups(params, lr), adam_options(lr, betas, eps, wd));
           }),
           py::arg("params"), py::arg("lr") = 1e-3, py::arg("betas") = std::pair{0.9, 0.999}, py::arg("eps") = 1e-8,
           py::arg("weight_decay") = 1e-2);
  optim.def("clip_grad_norm_", &nn::ClipGradNorm, py::arg("parameters"), py::arg("max_norm"));

  py::class_<nn::LrSchedule>(optim, "LrSchedule")
      .def("step", &nn::LrSchedule::Step)
      .def("lr_at", &nn::LrSchedule::LrAt, py::arg("step"))
      .def_property("last_step", &nn::LrSchedule::step, &nn::LrSchedule::SetStep);
  py::class_<nn::CosineWarmup, nn::LrSchedule>(optim, "CosineWarmup")
      .def(py::init<nn::Optimizer*, int64_t, int64_t, double>(), py::arg("optimizer"), py::arg("warmup_steps"),
           py::arg("total_steps"), py::arg("min_lr") = 0.0, py::keep_alive<1, 2>());
  py::class_<nn::StepLr, nn::LrSchedule>(optim, "StepLR")
      .def(py::init<nn::Optimizer*, int64_t, double>(), py::arg("optimizer"), py::arg("step_size"),
           py::arg("gamma") = 0.1, py::keep_alive<1, 2>());
  py::class_<nn::LinearWarmup, nn::LrSchedule>(optim, "LinearWarmup")
      .def(py::init<nn::Optimizer*, int64_t, int64_t>(), py::arg("optimizer"), py::arg("warmup_steps"),
           py::arg("total_steps"), py::keep_alive<1, 2>());
  py::class_<nn::OneCycle, nn::LrSchedule>(optim, "OneCycleLR")
      .def(py::init<nn::Optimizer*, double, int64_t, double, double, double>(), py::arg("optimizer"),
           py::arg("max_lr"), py::arg("total_steps"), py::arg("pct_start") = 0.3, py::arg("div_factor") = 25.0,
           py::arg("final_div_factor") = 1e4, py::keep_alive<1, 2>());

  // the model registry
  py::module_ models = m.def_submodule("models", "Models by name (ResNets, fmnist_resnet8, ...)");
  models.def("names", &models::Names);
  models.def("make", [](const std::string& name, int64_t num_classes, std::optional<int64_t> in_channels,
                        std::optional<uint64_t> seed) {
               int64_t channels = in_channels.value_or(name.rfind("fmnist", 0) == 0 ? 1 : 3);
               return WithSeed(seed, [&](Generator* g) { return models::Make(name, num_classes, channels, g); });
             },
             py::arg("name"), py::arg("num_classes") = 10, py::arg("in_channels") = py::none(),
             py::arg("seed") = py::none(),
             "A model by name; its weights from Generator(seed), else from the default generator");

  // BERT with Hugging Face's names: a transformers checkpoint loads directly.
  py::class_<models::BertConfig>(models, "BertConfig")
      .def(py::init([](int64_t vocab, int64_t hidden, int64_t layers, int64_t heads, int64_t intermediate,
                       int64_t max_positions, int64_t type_vocab, double dropout, double eps) {
             return models::BertConfig{vocab, hidden, layers, heads, intermediate, max_positions, type_vocab, dropout, eps};
           }),
           py::arg("vocab_size") = 30522, py::arg("hidden_size") = 768, py::arg("num_hidden_layers") = 12,
           py::arg("num_attention_heads") = 12, py::arg("intermediate_size") = 3072,
           py::arg("max_position_embeddings") = 512, py::arg("type_vocab_size") = 2,
           py::arg("hidden_dropout_prob") = 0.1, py::arg("layer_norm_eps") = 1e-12)
      .def_readonly("hidden_size", &models::BertConfig::hidden)
      .def_readonly("num_hidden_layers", &models::BertConfig::layers);
  py::class_<models::BertModel, Module, std::shared_ptr<models::BertModel>>(models, "BertModel")
      .def(py::init([](const models::BertConfig& c, std::optional<uint64_t> seed) {
             return WithSeed(seed, [&](Generator* g) { return std::make_shared<models::BertModel>(c, g); });
           }),
           py::arg("config"), py::arg("seed") = py::none())
      .def("__call__", [](models::BertModel& m, const Tensor& ids, std::optional<Tensor> type_ids,
                          std::optional<Tensor> mask) {
             py::gil_scoped_release release;
             auto [sequence, pooled] = m.Forward({ids, type_ids ? *type_ids : Tensor(), mask ? *mask : Tensor()});
             return std::make_pair(sequence, pooled);
           },
           py::arg("input_ids"), py::arg("token_type_ids") = py::none(), py::arg("attention_mask") = py::none(),
           "(sequence output (B, T, hidden), pooled output (B, hidden))")
      .def("to_integer", [](models::BertModel& m, bool dynamic) { m.ToInteger({.dynamic = dynamic}); },
           py::arg("dynamic") = false,
           "Every Linear to int8 (static ranges from QAT/PTQ quantizers, or dynamic), embeddings to int8 rows")
      .def_readonly("config", &models::BertModel::config);
  models.def("load_hugging_face", [](const std::string& path, Module& model) {
               return ValueOrRaise(models::LoadHuggingFace(path, model));
             },
             py::arg("path"), py::arg("model"),
             "Loads a transformers BERT safetensors file (names and shapes checked); returns the names it ignored");
}

}  // namespace quanta::python

// quanta.quant: mixed-precision policies (from text, a file or arguments),
// PrepareQat and its report, calibration (PTQ), progressive bits, conversion to
// an integer model, its file, and ONNX export.
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "quant/convert.h"
#include "quant/integer_model.h"
#include "quant/onnx_export.h"
#include "quant/prepare.h"
#include "python/src/common.h"

namespace quanta::python {
namespace {

using quant::MixedPrecisionPolicy;

quant::QuantizerKind KindOf(const std::string& name) {
  std::optional<quant::QuantizerKind> k = quant::QuantizerKindFromName(name);
  if (!k) throw Error("policy: unknown quantizer '" + name + "' (" + quant::QuantizerNames() + ")");
  return *k;
}

// Policy(weight_bits=8, act_bits=8, quantizer="ema", rules={"layer1.*": (4, 4, "lsq")}, first_last_8bit=True,
// ema_decay, ewgs_delta, lsq_init): the struct PrepareQat takes, built without going through policy text.
MixedPrecisionPolicy MakePolicy(int weight_bits, int act_bits, const std::string& quantizer, py::object rules,
                                bool first_last_8bit, double ema_decay, double ewgs_delta, const std::string& lsq_init) {
  MixedPrecisionPolicy p;
  p.defaults.weight_bits = weight_bits;
  p.defaults.act_bits = act_bits;
  p.defaults.kind = KindOf(quantizer);
  p.defaults.ema_decay = ema_decay;
  p.defaults.ewgs_delta = ewgs_delta;
  QUANTA_CHECK(lsq_init == "mse" || lsq_init == "paper", "policy: lsq_init '", lsq_init, "' is mse or paper");
  p.defaults.lsq_init = lsq_init == "mse" ? quant::LsqInit::kMse : quant::LsqInit::kPaper;
  p.first_last_8bit = first_last_8bit;
  if (!rules.is_none()) {
    py::iterable items = py::isinstance<py::dict>(rules) ? py::iterable(rules.attr("items")()) : py::iterable(rules);
    for (py::handle item : items) {
      py::tuple kv = item.cast<py::tuple>();
      QUANTA_CHECK(kv.size() == 2, "policy: a rule is (pattern, (weight_bits, act_bits[, quantizer]))");
      py::tuple bits = kv[1].cast<py::tuple>();
      QUANTA_CHECK(bits.size() == 2 || bits.size() == 3, "policy: rule '", kv[0].cast<std::string>(),
                   "' needs (weight_bits, act_bits[, quantizer])");
      quant::PolicyRule r{kv[0].cast<std::string>(), bits[0].cast<int>(), bits[1].cast<int>(), std::nullopt};
      if (bits.size() == 3) r.kind = KindOf(bits[2].cast<std::string>());
      p.rules.push_back(r);
    }
  }
  absl::Status valid = p.Validate();
  QUANTA_CHECK(valid.ok(), "policy: ", valid.message());
  return p;
}

std::function<Tensor(const Tensor&)> ForwardOf(nn::Layer& model) {
  return [&model](const Tensor& x) { return model.Forward(x); };
}

}  // namespace

void BindQuant(py::module_& m) {
  py::module_ q = m.def_submodule("quant", "Quantization: policies, QAT, PTQ, conversion, export");

  py::class_<MixedPrecisionPolicy>(q, "Policy")
      .def(py::init(&MakePolicy), py::arg("weight_bits") = 8, py::arg("act_bits") = 8, py::arg("quantizer") = "ema",
           py::arg("rules") = py::none(), py::arg("first_last_8bit") = true, py::arg("ema_decay") = 0.999,
           py::arg("ewgs_delta") = 0.2, py::arg("lsq_init") = "mse")
      .def_static("from_dict", [](py::dict d) { return py::module_::import("quanta._C").attr("quant").attr("Policy")(**d); },
                  py::arg("d"), "Policy(**d): {'weight_bits': 4, 'act_bits': 4, 'quantizer': 'lsq', 'rules': {...}}")
      .def_static("parse", [](const std::string& text) { return ValueOrRaise(MixedPrecisionPolicy::Parse(text)); },
                  py::arg("text"), "Policy text: 'default W A [quantizer]', 'PATTERN W A [quantizer]', ...")
      .def_static("load", [](const std::string& path) { return ValueOrRaise(MixedPrecisionPolicy::Load(path)); },
                  py::arg("path"))
      .def_property_readonly("weight_bits", [](const MixedPrecisionPolicy& p) { return p.defaults.weight_bits; })
      .def_property_readonly("act_bits", [](const MixedPrecisionPolicy& p) { return p.defaults.act_bits; })
      .def_property_readonly("quantizer", [](const MixedPrecisionPolicy& p) { return quant::QuantizerName(p.defaults.kind); })
      .def_readonly("first_last_8bit", &MixedPrecisionPolicy::first_last_8bit)
      .def_property_readonly("rules", [](const MixedPrecisionPolicy& p) {
        py::list out;
        for (const quant::PolicyRule& r : p.rules) {
          out.append(py::make_tuple(r.pattern, r.weight_bits, r.act_bits,
                                    r.kind ? py::cast(quant::QuantizerName(*r.kind)) : py::none()));
        }
        return out;
      })
      .def("bits_for", [](const MixedPrecisionPolicy& p, const std::string& name, bool first_or_last) {
        quant::QConfig c = p.For(name, first_or_last);
        return py::make_tuple(c.weight_bits, c.act_bits, quant::QuantizerName(c.kind));
      }, py::arg("name"), py::arg("first_or_last") = false);

  py::class_<quant::PrepareReport>(q, "PrepareReport")
      .def("__str__", &quant::PrepareReport::ToString)
      .def("__len__", [](const quant::PrepareReport& r) { return r.rows.size(); })
      .def_property_readonly("layers", [](const quant::PrepareReport& r) {
        py::list out;
        for (const auto& row : r.rows) {
          out.append(py::make_tuple(row.name, row.type, row.config.weight_bits, row.config.act_bits,
                                    quant::QuantizerName(row.config.kind)));
        }
        return out;
      }, "(name, type, weight bits, activation bits, quantizer) per quantized layer")
      .def("report", &quant::QuantReport, "Per-layer ranges, scales and sizes (text)")
      .def("report_json", &quant::QuantReportJson);

  // PrepareReport rows point into the model: the report keeps the model alive.
  q.def("prepare_qat", &quant::PrepareQat, py::arg("model"), py::arg("policy"), py::keep_alive<0, 1>(),
        "Attaches weight and input quantizers to every Linear and Conv2d the policy names");
  q.def("calibrate", [](const quant::PrepareReport& report, nn::Module& model, const std::vector<Tensor>& batches,
                        bool bias_correction, py::object forward) {
          if (forward.is_none()) {
            auto* layer = dynamic_cast<nn::Layer*>(&model);
            QUANTA_CHECK(layer != nullptr, "calibrate: the model is not a Layer (one input, one output); pass "
                                           "forward=, a function of one batch");
            py::gil_scoped_release release;
            quant::Calibrate(report, model, batches, ForwardOf(*layer), bias_correction);
          } else {  // a Python function: runs with the GIL held
            quant::Calibrate(report, model, batches,
                             [&forward](const Tensor& x) { return forward(x).cast<Tensor>(); }, bias_correction);
          }
        },
        py::arg("report"), py::arg("model"), py::arg("batches"), py::arg("bias_correction") = false,
        py::arg("forward") = py::none(),
        "Post-training quantization: observe the batches, fix the ranges (eval mode). forward(batch) -> Tensor "
        "runs the model where it is not a Layer (BERT: lambda ids: model(ids)[0])");
  q.def("freeze_observers", &quant::FreezeObservers, py::arg("report"), py::arg("frozen") = true);
  q.def("reestimate_batch_norm", [](const quant::PrepareReport& report, nn::Layer& model,
                                    const std::vector<Tensor>& batches) {
          py::gil_scoped_release release;
          return quant::ReestimateBatchNorm(report, model, batches, ForwardOf(model));
        },
        py::arg("report"), py::arg("model"), py::arg("batches"));
  q.def("parameter_groups", [](const nn::Module& model, double quant_lr_mult) {
          return GroupsToList(quant::ParameterGroups(model, quant_lr_mult));
        },
        py::arg("model"), py::arg("quant_lr_mult") = 0.1,
        "Parameter groups for an optimizer: the weights, and the quantizers' own parameters (no weight decay)");
  q.def("model_size_bytes", &quant::ModelSizeBytes, py::arg("model"), py::arg("report"));
  py::class_<quant::ProgressiveBits>(q, "ProgressiveBits")
      .def(py::init<std::vector<int>, int>(), py::arg("stages"), py::arg("epochs_per_stage"))
      .def("bits_at", &quant::ProgressiveBits::BitsAt, py::arg("epoch"))
      .def("apply", &quant::ProgressiveBits::Apply, py::arg("report"), py::arg("epoch"));

  py::class_<quant::IntegerModel, nn::Layer, std::shared_ptr<quant::IntegerModel>>(q, "IntegerModel")
      .def_static("load", [](const std::string& path) { return ValueOrRaise(quant::IntegerModel::Load(path)); },
                  py::arg("path"))
      .def("save", [](const quant::IntegerModel& model, const std::string& path,
                      std::map<std::string, std::string> metadata) { RaiseIfError(model.Save(path, metadata)); },
           py::arg("path"), py::arg("metadata") = std::map<std::string, std::string>{})
      .def("bytes", &quant::IntegerModel::Bytes, "Exact bytes of its weights, scales and biases")
      .def("summary", &quant::IntegerModel::Summary)
      .def("__str__", &quant::IntegerModel::Summary)
      .def("__len__", [](const quant::IntegerModel& model) { return model.nodes().size(); })
      .def_property_readonly("metadata", &quant::IntegerModel::metadata);
  q.def("convert", &quant::Convert, py::arg("model"), py::call_guard<py::gil_scoped_release>(),
        "The integer model of a prepared (QAT or calibrated) model");
  q.def("convert_float", &quant::ConvertFloat, py::arg("model"), py::call_guard<py::gil_scoped_release>(),
        "The same program in f32 with batch norm folded");
  q.def("export_onnx", [](const quant::IntegerModel& model, const std::string& path, const Shape& input_shape) {
          RaiseIfError(quant::ExportOnnx(model, path, input_shape));
        },
        py::arg("model"), py::arg("path"), py::arg("input_shape"), "ONNX QDQ form (opset 13)");
}

}  // namespace quanta::python

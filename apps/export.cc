// //apps:export: a saved integer model (//apps:train --checkpoint_dir writes
// model.int.safetensors) to ONNX in QDQ form, checked by ONNX's checker before
// it is written (atomically); block-format models at opset 21 (quant/onnx_export.h).
//
//   bazel run //apps:export -- --model=ckpt/model.int.safetensors --onnx=model.onnx [--input_shape=1,3,32,32]
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "apps/model_files.h"
#include "quant/onnx_export.h"

ABSL_FLAG(std::string, model, "", "the integer model file (safetensors, from IntegerModel::Save or //apps:train)");
ABSL_FLAG(std::string, onnx, "", "where to write the ONNX file");
ABSL_FLAG(std::string, input_shape, "", "N,C,H,W (N becomes a symbolic batch); default: the shape saved with the model");

int main(int argc, char** argv) {
  using namespace quanta;
  absl::SetProgramUsageMessage("export --model=FILE --onnx=OUT.onnx [--input_shape=1,3,32,32]");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "error: unexpected argument '%s' (usage: %s)\n", rest[1], absl::ProgramUsageMessage().data());
    return 2;
  }
  std::string model = absl::GetFlag(FLAGS_model), onnx = absl::GetFlag(FLAGS_onnx);
  if (model.empty() || onnx.empty()) {
    std::fprintf(stderr, "error: --model and --onnx are required (usage: %s)\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  model = apps::UserPath(model);
  onnx = apps::UserPath(onnx);
  absl::StatusOr<apps::ModelFile> file = apps::ReadModelFile(model);
  if (!file.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  if (!file->integer) {
    std::fprintf(stderr, "error: %s is a checkpoint, not an integer model: convert it first (//apps:train "
                 "--init_from=%s --quant=ptq|qat --checkpoint_dir=DIR writes DIR/model.int.safetensors)\n",
                 model.c_str(), model.c_str());
    return 1;
  }
  absl::StatusOr<Shape> shape = absl::GetFlag(FLAGS_input_shape).empty()
                                    ? apps::SavedInputShape(*file->integer, model)
                                    : apps::ParseShape(absl::GetFlag(FLAGS_input_shape));
  if (!shape.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(shape.status().message()).c_str());
    return 2;
  }
  absl::Status s = quant::ExportOnnx(*file->integer, onnx, *shape);
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s: %s\n", model.c_str(), std::string(s.message()).c_str());
    return 1;
  }
  std::printf("wrote %s (%s) from %s\n", onnx.c_str(), quant::OnnxForm(*file->integer).c_str(), model.c_str());
  return 0;
}

// //apps:inspect: what a model file holds. An integer model: the command that
// made it, its graph, bits and scale ranges per layer, and bytes. A training
// checkpoint: its tensors (quantizer state included), parameters and metadata.
//
//   bazel run //apps:inspect -- ckpt/model.int.safetensors
#include <cstdio>

#include "absl/flags/parse.h"
#include "apps/model_files.h"

int main(int argc, char** argv) {
  using namespace quanta;
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "usage: inspect FILE (an integer model or a checkpoint, safetensors)\n");
    return 2;
  }
  absl::StatusOr<apps::ModelFile> file = apps::ReadModelFile(apps::UserPath(args[1]));
  if (!file.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  std::fputs(apps::Describe(*file).c_str(), stdout);
  return 0;
}

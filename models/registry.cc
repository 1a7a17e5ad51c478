// The model names and what they build.
#include "models/registry.h"

#include "absl/strings/str_join.h"
#include "core/error.h"
#include "models/resnet.h"
#include "models/resnet_cifar.h"
#include "models/tiny_cnn.h"

namespace quanta::models {

std::vector<std::string> Names() {
  return {"resnet20", "resnet32",       "resnet44",       "resnet56",       "resnet110",      "resnet18",
          "resnet34", "resnet50",       "resnet18_cifar", "resnet34_cifar", "resnet50_cifar", "fmnist_resnet8",
          "fmnist_resnet8_half", "tiny_cnn"};
}

std::shared_ptr<nn::Layer> Make(const std::string& name, int64_t num_classes, int64_t in_channels, Generator* gen) {
  auto channels = [&](int64_t want) {
    QUANTA_CHECK(in_channels == want, "models: ", name, " takes ", want, "-channel images, the data has ", in_channels);
  };
  for (int depth : {20, 32, 44, 56, 110}) {
    if (name == "resnet" + std::to_string(depth)) {
      channels(3);
      return CifarResNet::Make(depth, num_classes, gen);
    }
  }
  for (const char* base : {"resnet18", "resnet34", "resnet50"}) {
    if (name == base || name == std::string(base) + "_cifar") {
      channels(3);
      return ResNet::Make(base, num_classes, gen, /*cifar_stem=*/name != base);
    }
  }
  if (name == "fmnist_resnet8" || name == "fmnist_resnet8_half") {
    channels(1);
    return ResNet::Make(name, num_classes, gen);
  }
  if (name == "tiny_cnn") return TinyCnn(gen ? gen->seed() : 0, in_channels, num_classes);
  throw Error("models: unknown model '" + name + "' (" + absl::StrJoin(Names(), ", ") + ")");
}

}  // namespace quanta::models

// Every reference model by name, for the apps and for users who pick a model
// from a flag: "resnet20", "resnet32", "resnet44", "resnet56", "resnet110" (CIFAR
// ResNets), "resnet18", "resnet34", "resnet50" (ImageNet layout) and their
// "_cifar" variants (3x3 stem, no max pool), "fmnist_resnet8", "tiny_cnn".
//
//   Generator gen(0);
//   auto net = models::Make("resnet20", /*num_classes=*/100, /*in_channels=*/3, &gen);
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"

namespace quanta::models {

// Throws quanta::Error naming the model and the known names.
std::shared_ptr<nn::Layer> Make(const std::string& name, int64_t num_classes, int64_t in_channels, Generator* gen);
std::vector<std::string> Names();

}  // namespace quanta::models

// Splitting a labelled dataset among simulated federated clients: the non-IID
// split by a Dirichlet distribution over labels (Hsu et al. 2019, the split
// FedAvg papers use). Not here: how clients train (dist/ddp.h's ModelAverager).
//
//   std::vector<std::vector<int64_t>> parts = DirichletSplit(train->labels(), 10, /*clients=*/4, /*alpha=*/0.5, 0);
//   auto mine = Subset(train, parts[rank]);   // this client's examples
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "data/dataset.h"

namespace quanta::data {

// For each class, proportions p ~ Dir(alpha, ..., alpha) over the clients, and
// the class's examples (in a seeded random order) dealt out in those
// proportions. Every example goes to exactly one client; each client's list is
// sorted. Small alpha: each client sees few classes; alpha -> infinity: IID.
// Throws quanta::Error unless clients >= 1, alpha > 0 and labels lie in [0, classes).
std::vector<std::vector<int64_t>> DirichletSplit(const std::vector<int64_t>& labels, int64_t classes, int clients,
                                                 double alpha, uint64_t seed);

// The examples of `d` at `indices`, in that order, as a dataset of its own.
std::shared_ptr<ImageDataset> Subset(const ImageDataset& d, const std::vector<int64_t>& indices);

}  // namespace quanta::data

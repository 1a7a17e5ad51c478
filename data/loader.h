// DataLoader: batches of transformed examples, produced by worker threads into a
// bounded, ordered prefetch queue. Shuffling is a permutation drawn from (seed,
// epoch): a different, reproducible order each epoch, the same for any number of
// workers.
//
//   DataLoader loader(train, Compose({ToTensor(), RandomCrop(32, 4), HorizontalFlip()}),
//                     {.batch_size = 128, .shuffle = true, .seed = 1, .workers = 2});
//   for (int epoch = 0; epoch < 10; ++epoch) {
//     std::unique_ptr<DataLoader::Epoch> it = loader.Start(epoch);
//     Batch b;
//     while (it->Next(&b)) Train(b.data, b.labels);   // f32 (B, C, H, W), i64 (B)
//   }
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"

namespace quanta::data {

struct Batch {
  Tensor data;    // f32 (B, C, H, W) (u8 (B, H, W, C) without a transform)
  Tensor labels;  // i64 (B)
  std::vector<int64_t> indices;  // dataset indices, in batch order
};

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;
  int workers = 2;       // 0: batches are made on the calling thread
  int prefetch = 4;      // batches made ahead of the consumer, at most
  Device device = Device::Cpu();
  // Float batches in channels-last memory (Tensor::suggests_channels_last), so
  // that the network runs channels-last on the CPU (oneDNN's NHWC convolutions).
  // Values are the same either way.
  bool channels_last = false;
  // Data parallelism (PyTorch's DistributedSampler): the epoch's permutation,
  // cut to a multiple of num_shards (drop_last) or padded with its first
  // indices, is dealt out round-robin, and this loader reads shard `shard` of
  // it. All shards have the same length; together, each global step's batches
  // are the single-process batch of batch_size * num_shards examples.
  int num_shards = 1, shard = 0;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, TransformPtr transform, LoaderOptions options);
  int64_t NumBatches() const;
  // The dataset order of an epoch (a permutation when shuffling); with shards,
  // this shard's part of it.
  std::vector<int64_t> Order(uint64_t epoch) const;
  // Examples this loader reads per epoch (the dataset's, or one shard's).
  int64_t ShardSize() const;

  class Epoch {
   public:
    ~Epoch();
    Epoch(Epoch&&) = delete;
    // The next batch, in order; false after the last. Rethrows a worker's error.
    bool Next(Batch* out);

   private:
    friend class DataLoader;
    Epoch(const DataLoader* loader, uint64_t epoch);
    void Work();

    const DataLoader* loader_;
    uint64_t epoch_;
    std::vector<int64_t> order_;
    int64_t num_batches_;
    std::mutex mu_;
    std::condition_variable produced_, consumed_;
    std::map<int64_t, Batch> ready_;
    int64_t next_to_claim_ = 0, next_to_return_ = 0;
    bool stop_ = false;
    std::exception_ptr error_;
    std::vector<std::thread> workers_;
  };
  // Starts producing an epoch's batches (workers begin at once).
  std::unique_ptr<Epoch> Start(uint64_t epoch) const;

  // Makes batch b of an epoch order (what a worker runs).
  Batch MakeBatch(const std::vector<int64_t>& order, int64_t b, uint64_t epoch) const;

 private:
  std::vector<int64_t> FullOrder(uint64_t epoch) const;
  std::shared_ptr<const Dataset> dataset_;
  TransformPtr transform_;
  LoaderOptions options_;
};

}  // namespace quanta::data

// Workers claim batch numbers in order and may run at most `prefetch` batches
// ahead of the consumer; the consumer takes batches strictly in order.
#include "data/loader.h"

#include <cstring>

#include "core/error.h"
#include "core/generator.h"
#include "core/ops.h"

namespace quanta::data {

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, TransformPtr transform, LoaderOptions options)
    : dataset_(std::move(dataset)), transform_(std::move(transform)), options_(options) {
  QUANTA_CHECK(dataset_ != nullptr, "DataLoader: no dataset");
  QUANTA_CHECK(options_.batch_size >= 1 && options_.workers >= 0 && options_.prefetch >= 1,
               "DataLoader: batch_size ", options_.batch_size, ", workers ", options_.workers, " and prefetch ",
               options_.prefetch, " must be positive (workers may be 0)");
  QUANTA_CHECK(options_.num_shards >= 1 && options_.shard >= 0 && options_.shard < options_.num_shards,
               "DataLoader: shard ", options_.shard, " of ", options_.num_shards);
}

int64_t DataLoader::ShardSize() const {
  int64_t n = dataset_->size(), w = options_.num_shards;
  if (w == 1) return n;
  return options_.drop_last ? n / w : (n + w - 1) / w;
}

int64_t DataLoader::NumBatches() const {
  int64_t n = ShardSize(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> DataLoader::FullOrder(uint64_t epoch) const {
  std::vector<int64_t> order(dataset_->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  if (!options_.shuffle) return order;
  // Fisher-Yates with Philox draws keyed by (seed, epoch).
  uint64_t key = options_.seed * 0x9E3779B97F4A7C15ull + epoch;
  for (int64_t i = static_cast<int64_t>(order.size()) - 1; i > 0; --i) {
    auto j = static_cast<int64_t>(PhiloxUniform(key, static_cast<uint64_t>(i)) * static_cast<double>(i + 1));
    std::swap(order[i], order[std::min(j, i)]);
  }
  return order;
}

std::vector<int64_t> DataLoader::Order(uint64_t epoch) const {
  std::vector<int64_t> all = FullOrder(epoch);
  const int64_t w = options_.num_shards;
  if (w == 1) return all;
  const int64_t per_shard = ShardSize(), total = per_shard * w;
  for (int64_t i = static_cast<int64_t>(all.size()); i < total; ++i) all.push_back(all[i % all.size()]);  // padding
  std::vector<int64_t> mine;
  for (int64_t i = options_.shard; i < total; i += w) mine.push_back(all[i]);
  return mine;
}

Batch DataLoader::MakeBatch(const std::vector<int64_t>& order, int64_t b, uint64_t epoch) const {
  int64_t begin = b * options_.batch_size;
  int64_t end = std::min<int64_t>(begin + options_.batch_size, static_cast<int64_t>(order.size()));
  Batch batch;
  std::vector<int64_t> labels;
  std::vector<Sample> samples;
  for (int64_t i = begin; i < end; ++i) {
    Example e = dataset_->Get(order[i]);
    Sample s = Sample::FromImage(e.image);
    if (transform_) {
      SampleRng rng(options_.seed, epoch, static_cast<uint64_t>(order[i]));
      transform_->Apply(s, rng);
    }
    if (!samples.empty()) {
      QUANTA_CHECK(s.c == samples[0].c && s.h == samples[0].h && s.w == samples[0].w && s.is_float == samples[0].is_float,
                   "DataLoader: example ", order[i], " is ", s.c, "x", s.h, "x", s.w, " after the transform, but ",
                   "example ", batch.indices[0], " is ", samples[0].c, "x", samples[0].h, "x", samples[0].w);
    }
    batch.indices.push_back(order[i]);
    labels.push_back(e.label);
    samples.push_back(std::move(s));
  }
  const Sample& first = samples.at(0);
  int64_t B = static_cast<int64_t>(samples.size());
  if (first.is_float && options_.channels_last) {
    const int64_t C = first.c, HW = first.h * first.w;
    Tensor nhwc = Tensor::Empty({B, first.h, first.w, C});
    float* p = nhwc.data<float>();
    for (const Sample& s : samples) {
      for (int64_t i = 0; i < HW; ++i) {
        for (int64_t ch = 0; ch < C; ++ch) *p++ = s.chw[ch * HW + i];
      }
    }
    batch.data = nhwc.Permute({0, 3, 1, 2});
  } else if (first.is_float) {
    batch.data = Tensor::Empty({B, first.c, first.h, first.w});
    float* p = batch.data.data<float>();
    for (const Sample& s : samples) p = std::copy(s.chw.begin(), s.chw.end(), p);
  } else {
    batch.data = Tensor::Empty({B, first.h, first.w, first.c}, DType::kU8);
    uint8_t* p = batch.data.data<uint8_t>();
    for (const Sample& s : samples) p = std::copy(s.hwc.begin(), s.hwc.end(), p);
  }
  batch.labels = Tensor::FromVector<int64_t>(labels, {B});
  if (!options_.device.is_cpu()) {
    batch.data = batch.data.To(options_.device);
    batch.labels = batch.labels.To(options_.device);
  }
  return batch;
}

std::unique_ptr<DataLoader::Epoch> DataLoader::Start(uint64_t epoch) const {
  return std::unique_ptr<Epoch>(new Epoch(this, epoch));
}

DataLoader::Epoch::Epoch(const DataLoader* loader, uint64_t epoch)
    : loader_(loader), epoch_(epoch), order_(loader->Order(epoch)), num_batches_(loader->NumBatches()) {
  for (int i = 0; i < loader_->options_.workers; ++i) workers_.emplace_back([this] { Work(); });
}

DataLoader::Epoch::~Epoch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  consumed_.notify_all();
  for (auto& t : workers_) t.join();
}

void DataLoader::Epoch::Work() {
  while (true) {
    int64_t b;
    {
      std::unique_lock<std::mutex> lock(mu_);
      consumed_.wait(lock, [&] {
        return stop_ || next_to_claim_ >= num_batches_ || next_to_claim_ < next_to_return_ + loader_->options_.prefetch;
      });
      if (stop_ || next_to_claim_ >= num_batches_) return;
      b = next_to_claim_++;
    }
    Batch batch;
    std::exception_ptr error;
    try {
      batch = loader_->MakeBatch(order_, b, epoch_);
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (error && !error_) error_ = error;
      ready_.emplace(b, std::move(batch));
    }
    produced_.notify_all();
  }
}

bool DataLoader::Epoch::Next(Batch* out) {
  if (next_to_return_ >= num_batches_) return false;
  if (workers_.empty()) {  // no workers: make it here
    *out = loader_->MakeBatch(order_, next_to_return_++, epoch_);
    return true;
  }
  std::unique_lock<std::mutex> lock(mu_);
  produced_.wait(lock, [&] { return error_ != nullptr || ready_.count(next_to_return_) > 0; });
  if (error_) std::rethrow_exception(error_);
  auto it = ready_.find(next_to_return_);
  *out = std::move(it->second);
  ready_.erase(it);
  ++next_to_return_;
  lock.unlock();
  consumed_.notify_all();
  return true;
}

}  // namespace quanta::data

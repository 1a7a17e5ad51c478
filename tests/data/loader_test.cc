// Transforms and the DataLoader: hand-computed transforms, a round trip,
// reproducible shuffling, worker-count independence, errors from workers.
#include "data/loader.h"

#include <algorithm>
#include <set>

#include "core/ops.h"
#include "gtest/gtest.h"

namespace quanta::data {
namespace {

// n images 2x3 with 1 or 3 channels; pixel values encode (image, y, x, c).
std::shared_ptr<ImageDataset> Tiny(int n, int channels = 1) {
  std::vector<uint8_t> px;
  for (int i = 0; i < n; ++i) {
    for (int y = 0; y < 2; ++y) {
      for (int x = 0; x < 3; ++x) {
        for (int c = 0; c < channels; ++c) px.push_back(static_cast<uint8_t>(i * 10 + y * 3 + x + c * 100));
      }
    }
  }
  std::vector<int64_t> labels(n);
  for (int i = 0; i < n; ++i) labels[i] = i % 5;
  return std::make_shared<ImageDataset>(Tensor::FromVector<uint8_t>(px, {n, 2, 3, channels}), labels, 5);
}

TEST(Transforms, HandValues) {
  Sample s = Sample::FromImage(Tiny(1, 3)->Get(0).image);
  SampleRng rng(0, 0, 0);
  ToTensor()->Apply(s, rng);
  EXPECT_EQ(s.chw.size(), 18u);
  EXPECT_FLOAT_EQ(s.chw[1], 1 / 255.0f);          // channel 0, (0, 1)
  EXPECT_FLOAT_EQ(s.chw[6 + 4], 104 / 255.0f);    // channel 1, (1, 1)
  HorizontalFlip(1.0)->Apply(s, rng);
  EXPECT_FLOAT_EQ(s.chw[0], 2 / 255.0f);
  Normalize({0.5f, 0.5f, 0.5f}, {0.25f, 0.5f, 1.0f})->Apply(s, rng);
  EXPECT_FLOAT_EQ(s.chw[0], (2 / 255.0f - 0.5f) / 0.25f);
  // Crop with padding: every output is zero or a pixel of the input, shifted.
  Sample t = Sample::FromImage(Tiny(1)->Get(0).image);
  ToTensor()->Apply(t, rng);
  std::vector<float> original = t.chw;
  RandomCrop(3, 2)->Apply(t, rng);
  EXPECT_EQ(t.h, 3);
  EXPECT_EQ(t.w, 3);
  for (float v : t.chw) EXPECT_TRUE(v == 0 || std::count(original.begin(), original.end(), v) == 1) << v;
  Sample u = Sample::FromImage(Tensor::FromVector<uint8_t>(std::vector<uint8_t>(64, 255), {8, 8, 1}));
  ToTensor()->Apply(u, rng);
  Cutout(2)->Apply(u, rng);
  EXPECT_GE(std::count(u.chw.begin(), u.chw.end(), 0.0f), 1);
  EXPECT_LE(std::count(u.chw.begin(), u.chw.end(), 0.0f), 4);
  Sample raw = Sample::FromImage(Tiny(1)->Get(0).image);
  EXPECT_THROW(Normalize({0.5f}, {1.0f})->Apply(raw, rng), Error);  // before ToTensor
}

TEST(Loader, RoundTripInOrder) {
  auto d = Tiny(7);
  DataLoader loader(d, nullptr, {.batch_size = 3, .shuffle = false, .workers = 2});
  EXPECT_EQ(loader.NumBatches(), 3);
  auto epoch = loader.Start(0);
  Batch b;
  std::vector<int64_t> seen;
  while (epoch->Next(&b)) {
    EXPECT_EQ(b.data.dtype(), DType::kU8);
    for (int64_t i = 0; i < b.data.size(0); ++i) {
      EXPECT_EQ(b.data.Select(0, i).Contiguous().ToVector<uint8_t>(), d->Get(b.indices[i]).image.Contiguous().ToVector<uint8_t>());
      EXPECT_EQ(b.labels.ToVector<int64_t>()[i], d->labels()[b.indices[i]]);
    }
    seen.insert(seen.end(), b.indices.begin(), b.indices.end());
  }
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  DataLoader dropping(d, nullptr, {.batch_size = 3, .shuffle = false, .drop_last = true, .workers = 1});
  EXPECT_EQ(dropping.NumBatches(), 2);
}

TEST(Loader, ShufflingIsReproducibleAndChangesPerEpoch) {
  auto d = Tiny(50);
  DataLoader a(d, nullptr, {.batch_size = 8, .seed = 3});
  DataLoader b(d, nullptr, {.batch_size = 8, .seed = 3});
  DataLoader c(d, nullptr, {.batch_size = 8, .seed = 4});
  EXPECT_EQ(a.Order(0), b.Order(0));
  EXPECT_NE(a.Order(0), a.Order(1));
  EXPECT_NE(a.Order(0), c.Order(0));
  std::vector<int64_t> sorted = a.Order(5);
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sorted[i], i);
}

TEST(Loader, WorkerCountDoesNotChangeTheBatches) {
  auto d = Tiny(40, 3);
  TransformPtr t = Compose({ToTensor(), RandomCrop(2, 1), HorizontalFlip(0.5), Normalize({0.1f, 0.2f, 0.3f}, {1, 2, 3})});
  std::vector<std::vector<float>> results;
  for (int workers : {0, 1, 2, 3}) {
    DataLoader loader(d, t, {.batch_size = 6, .seed = 9, .workers = workers, .prefetch = 2});
    auto epoch = loader.Start(2);
    Batch b;
    std::vector<float> all;
    while (epoch->Next(&b)) {
      EXPECT_EQ(b.data.shape()[1], 3);
      std::vector<float> v = b.data.ToVector<float>();
      all.insert(all.end(), v.begin(), v.end());
    }
    results.push_back(all);
  }
  for (size_t i = 1; i < results.size(); ++i) EXPECT_EQ(results[i], results[0]) << "workers " << i;
}

// channels_last: float batches hold the same values (ToTensor's, hand-checked:
// pixel / 255 at (image, c, y, x)) in NHWC memory that asks for channels-last
// results, with three channels and with one (channel stride 1).
TEST(Loader, ChannelsLastBatchesHoldTheSameValues) {
  for (int channels : {3, 1}) {
    SCOPED_TRACE(channels);
    auto d = Tiny(5, channels);
    DataLoader plain(d, ToTensor(), {.batch_size = 4, .shuffle = false, .workers = 0});
    DataLoader last(d, ToTensor(), {.batch_size = 4, .shuffle = false, .workers = 1, .channels_last = true});
    auto a = plain.Start(0), b = last.Start(0);
    Batch x, y;
    ASSERT_TRUE(a->Next(&x) && b->Next(&y));
    EXPECT_TRUE(y.data.suggests_channels_last());
    EXPECT_FALSE(x.data.suggests_channels_last());
    EXPECT_EQ(y.data.shape(), x.data.shape());
    EXPECT_EQ(y.data.ToVector<float>(), x.data.ToVector<float>());
    // Image 3, channel c, row 1, column 2: pixel 3 * 10 + 1 * 3 + 2 + c * 100.
    for (int c = 0; c < channels; ++c) {
      EXPECT_FLOAT_EQ(y.data.Select(0, 3).Select(0, c).Select(0, 1).Select(0, 2).item<float>(), (35 + c * 100) / 255.0f);
    }
    EXPECT_EQ(y.indices, x.indices);
  }
}

TEST(Loader, WorkerErrorsReachTheConsumer) {
  auto d = Tiny(10);
  DataLoader loader(d, Compose({ToTensor(), Normalize({0.5f, 0.5f, 0.5f}, {1, 1, 1})}), {.batch_size = 4, .workers = 2});
  auto epoch = loader.Start(0);
  Batch b;
  try {
    epoch->Next(&b);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "normalize: 3 channels given, image has 1");
  }
  // Destroying an epoch mid-way stops its workers.
  DataLoader slow(Tiny(100), nullptr, {.batch_size = 1, .workers = 2, .prefetch = 2});
  auto partial = slow.Start(0);
  ASSERT_TRUE(partial->Next(&b));
  partial.reset();
}

}  // namespace
}  // namespace quanta::data

// Data benchmark: images per second of the CIFAR pipeline (read a CIFAR-format
// file, random crop with padding 4, horizontal flip, normalize, batch 128) at 1
// and 2 workers. The file is synthetic (50,000 records, written to a temporary
// folder). A program, not a test. Run: bazel run //apps:bench_data
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "data/loader.h"
#include "data/readers.h"

ABSL_FLAG(int, records, 50000, "synthetic CIFAR-100 records");
ABSL_FLAG(int, epochs, 3, "timed epochs per worker count");

int main(int argc, char** argv) {
  using namespace quanta;
  using namespace quanta::data;
  absl::ParseCommandLine(argc, argv);
  int n = absl::GetFlag(FLAGS_records);
  std::string dir = std::filesystem::temp_directory_path() / "quanta-bench-data";
  std::filesystem::create_directories(dir + "/cifar-100-binary");
  {
    std::string bytes;
    bytes.reserve(static_cast<size_t>(n) * 3074);
    uint32_t x = 12345;
    for (int i = 0; i < n; ++i) {
      bytes.push_back(static_cast<char>(i % 20));
      bytes.push_back(static_cast<char>(i % 100));
      for (int p = 0; p < 3072; ++p) {
        x = x * 1664525u + 1013904223u;
        bytes.push_back(static_cast<char>(x >> 24));
      }
    }
    std::ofstream(dir + "/cifar-100-binary/train.bin", std::ios::binary) << bytes;
  }
  auto start_read = std::chrono::steady_clock::now();
  auto train = ReadCifar(dir, CifarKind::k100, Split::kTrain);
  if (!train.ok()) {
    std::fprintf(stderr, "%s\n", std::string(train.status().message()).c_str());
    return 1;
  }
  double read_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_read).count();
  std::printf("read %d CIFAR-100 records in %.2f s (%.0f records/s)\n", n, read_s, n / read_s);
  TransformPtr t = Compose({ToTensor(), RandomCrop(32, 4), HorizontalFlip(0.5),
                            Normalize({0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f})});
  for (int workers : {1, 2}) {
    DataLoader loader(*train, t, {.batch_size = 128, .seed = 1, .workers = workers});
    std::vector<double> rates;
    for (int e = 0; e < absl::GetFlag(FLAGS_epochs); ++e) {
      auto start = std::chrono::steady_clock::now();
      auto epoch = loader.Start(e);
      Batch b;
      int64_t images = 0;
      while (epoch->Next(&b)) images += b.data.size(0);
      rates.push_back(images / std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(rates.begin(), rates.end());
    std::printf("workers=%d  %.0f images/s (median of %zu epochs; min %.0f, max %.0f)\n", workers,
                rates[rates.size() / 2], rates.size(), rates.front(), rates.back());
  }
  std::printf("target: 20000 images/s or more with 2 workers\n");
  std::filesystem::remove_all(dir);
  return 0;
}

// safetensors and checkpoints: bit-exact round trips, a file written by another
// tool, every kind of bad file, atomic saves, and the fuzz target over seeds and
// systematic mutations.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/ops.h"
#include "gtest/gtest.h"
#include "nn/checkpoint.h"
#include "nn/layers.h"
#include "nn/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace quanta::nn {
namespace {

namespace fs = std::filesystem;

std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Bytes(const Tensor& t) {
  Tensor c = t.Contiguous();
  return std::string(static_cast<const char*>(c.raw_data()), StorageBytes(c.dtype(), c.numel()));
}

std::string ErrorOf(std::string_view bytes) {
  absl::StatusOr<Safetensors> r = ParseSafetensors(bytes);
  return r.ok() ? "ok" : std::string(r.status().message());
}

std::string WithHeader(const std::string& json, size_t data_bytes) {
  std::string h = json;
  while (h.size() % 8) h += ' ';
  uint64_t n = h.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + h + std::string(data_bytes, '\x01');
}

TEST(Safetensors, RoundTripIsBitExactForEveryDtype) {
  Generator gen(5);
  TensorMap in;
  in["f32"] = Normal({3, 4}, 0, 1, &gen);
  in["f64"] = Normal({5}, 0, 1, &gen, DType::kF64);
  in["f16"] = Normal({2, 2}, 0, 1, &gen).To(DType::kF16);
  in["bf16"] = Normal({7}, 0, 1, &gen).To(DType::kBF16);
  in["i32"] = Tensor::FromVector<int32_t>({-5, 1 << 30}, {2});
  in["i64"] = Tensor::FromVector<int64_t>({-(1ll << 40), 3}, {2});
  in["i8"] = Tensor::FromVector<int8_t>({-128, 127}, {2});
  in["u8"] = Tensor::FromVector<uint8_t>({0, 255}, {2});
  in["bool"] = Tensor::FromVector<bool>({true, false, true}, {3});
  in["f8_e4m3"] = Normal({5}, 0, 100, &gen).To(DType::kF8E4M3);
  in["f8_e5m2"] = Normal({5}, 0, 100, &gen).To(DType::kF8E5M2);
  in["f8_e8m0"] = Abs(Normal({5}, 0, 100, &gen)).To(DType::kF8E8M0);
  in["scalar"] = Scalar(3.25);
  in["empty"] = Zeros({0, 4});
  in["strided view"] = Normal({4, 6}, 0, 1, &gen).Transpose(0, 1);
  in["unicode \xc3\xa9 \"quoted\""] = Ones({1});
  std::string path = TempDir() + "/roundtrip.safetensors";
  ASSERT_TRUE(SaveSafetensors(path, in, {{"epoch", "3"}, {"note", "a \"quote\"\n"}}).ok());
  absl::StatusOr<Safetensors> out = LoadSafetensors(path);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    const Tensor& u = out->tensors.at(name);
    EXPECT_EQ(u.dtype(), t.dtype()) << name;
    EXPECT_EQ(u.shape(), t.shape()) << name;
    EXPECT_EQ(Bytes(u), Bytes(t)) << name;
  }
  EXPECT_EQ(out->metadata.at("epoch"), "3");
  EXPECT_EQ(out->metadata.at("note"), "a \"quote\"\n");
  // Saving what was loaded gives the same bytes.
  EXPECT_EQ(*SerializeSafetensors(out->tensors, out->metadata), ReadFile(path));
}

TEST(Safetensors, ReadsAFileWrittenByAnotherTool) {
  absl::StatusOr<Safetensors> f = LoadSafetensors("tests/nn/testdata/safetensors_seeds/valid.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors.at("w").ToVector<float>(), (std::vector<float>{1.5, -2, 0.25, 3}));
  EXPECT_EQ(f->tensors.at("w").shape(), (Shape{2, 2}));
  EXPECT_EQ(f->tensors.at("ids").ToVector<int64_t>(), (std::vector<int64_t>{7, -1, 42}));
  EXPECT_EQ(f->tensors.at("half").ToVector<float>(), (std::vector<float>{1, -0.5}));
  EXPECT_EQ(f->metadata.at("format"), "pt");
}

TEST(Safetensors, BadFilesGiveClearErrors) {
  EXPECT_EQ(ErrorOf("abc"), "safetensors: file is 3 bytes; it must start with an 8-byte header length");
  std::string huge(8, '\0');
  huge[7] = 0x40;
  EXPECT_EQ(ErrorOf(huge + "{}"), "safetensors: header length 4611686018427387904 exceeds the 104857600-byte limit");
  std::string past(8, '\0');
  past[0] = 100;
  EXPECT_EQ(ErrorOf(past + "{}"), "safetensors: header length 100 runs past the end of the file (10 bytes)");
  EXPECT_EQ(ErrorOf(WithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)),
            "safetensors: tensor \"a\" data_offsets [0, 8] fall outside the 4-byte data section");
  EXPECT_EQ(ErrorOf(WithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
            "safetensors: tensors \"a\" and \"b\" overlap in the data section");
  EXPECT_EQ(ErrorOf(WithHeader(R"({"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", 1)),
            "safetensors: tensor \"a\" has unknown dtype \"Q9\"");
  EXPECT_EQ(ErrorOf(WithHeader(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
            "safetensors: tensor \"a\" holds 8 bytes but f32[3] needs 12");
  EXPECT_EQ(ErrorOf(WithHeader(R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})", 8)),
            "safetensors: tensor \"a\" is too large");
  EXPECT_EQ(ErrorOf(WithHeader(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)),
            "safetensors: bad JSON header at byte 29: expected an object, array, string or non-negative integer");
  EXPECT_EQ(ErrorOf(WithHeader(R"({"a":1,"a":2})", 0)), "safetensors: tensor \"a\" is not an object");
  EXPECT_EQ(ErrorOf(WithHeader(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                               R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
            "safetensors: tensor \"a\" appears twice");
  EXPECT_EQ(ErrorOf(WithHeader(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4)),
            "safetensors: tensor \"a\" data_offsets [4, 0] fall outside the 4-byte data section");
  EXPECT_EQ(ErrorOf(WithHeader(std::string(20, '[') + std::string(20, ']'), 0)),
            "safetensors: bad JSON header at byte 9: nested too deeply");
  EXPECT_EQ(ErrorOf(WithHeader(R"({"a":{"dtype":"F32")", 0)),
            "safetensors: bad JSON header at byte 24: expected ',' or '}'");
  absl::StatusOr<Safetensors> missing = LoadSafetensors(TempDir() + "/no such file.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(missing.status().message()).find("no such file.safetensors: cannot open"), std::string::npos);
}

TEST(Safetensors, SavesAtomically) {
  std::string path = TempDir() + "/atomic.safetensors";
  ASSERT_TRUE(SaveSafetensors(path, {{"a", Ones({2})}}).ok());
  std::string before = ReadFile(path);
  // A save that fails (a dtype safetensors cannot hold) leaves the old file.
  Tensor q = Tensor::FromQuantized({1}, {1}, DType::kQInt8, QuantParams::PerTensor(1, 0));
  absl::Status s = SaveSafetensors(path, {{"a", Zeros({2})}, {"q", q}});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("tensor \"q\" has dtype qint8"), std::string::npos) << s;
  EXPECT_EQ(ReadFile(path), before);
  // So does one whose folder cannot be written; and no temporary files remain.
  EXPECT_FALSE(SaveSafetensors(TempDir() + "/missing-dir/x.safetensors", {{"a", Ones({1})}}).ok());
  for (const auto& entry : fs::directory_iterator(TempDir())) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
  }
}

TEST(Checkpoint, ModelAndOptimizerRoundTrip) {
  Generator gen(6);
  Sequential a(std::make_shared<Linear>(3, 4, true, &gen), std::make_shared<BatchNorm2d>(4));
  Sequential b(std::make_shared<Linear>(3, 4, true, &gen), std::make_shared<BatchNorm2d>(4));
  SGD opt_a({{a.Parameters()}}, {.lr = 0.1, .momentum = 0.9});
  for (Tensor& p : a.Parameters()) p.SetGrad(OnesLike(p.Detach()));
  opt_a.Step();
  std::string path = TempDir() + "/ckpt.safetensors";
  ASSERT_TRUE(SaveCheckpoint(path, a, &opt_a, {{"epoch", "1"}}).ok());
  SGD opt_b({{b.Parameters()}}, {.lr = 0.5, .momentum = 0.9});
  absl::StatusOr<std::map<std::string, std::string>> meta = LoadCheckpoint(path, b, &opt_b);
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_EQ(meta->at("epoch"), "1");
  for (const auto& [name, t] : a.StateDict()) EXPECT_EQ(Bytes(b.StateDict().at(name)), Bytes(t)) << name;
  EXPECT_EQ(opt_b.steps(), 1);
  EXPECT_EQ(Bytes(opt_b.StateDict().at("group0.param0.momentum_buffer")),
            Bytes(opt_a.StateDict().at("group0.param0.momentum_buffer")));
  // A checkpoint of another architecture is refused by name.
  Sequential c(std::make_shared<Linear>(3, 5, true, &gen));
  absl::StatusOr<std::map<std::string, std::string>> bad = LoadCheckpoint(path, c);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(std::string(bad.status().message()),
            "checkpoint " + path + ": load_state_dict: mis-shaped keys: 0.weight (expected f32[5, 3], got f32[4, 3]), "
            "0.bias (expected f32[5], got f32[4]); unexpected keys: 1.bias, 1.num_batches_tracked, 1.running_mean, "
            "1.running_var, 1.weight");
}

TEST(Safetensors, FuzzTargetSurvivesSeedsAndMutations) {
  int files = 0;
  for (const auto& entry : fs::directory_iterator("tests/nn/testdata/safetensors_seeds")) {
    std::string bytes = ReadFile(entry.path());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ++files;
  }
  EXPECT_GE(files, 7);
  // Every truncation and a byte flip at every position of a valid file.
  std::string valid = ReadFile("tests/nn/testdata/safetensors_seeds/valid.safetensors");
  int parsed = 0;
  for (size_t n = 0; n <= valid.size(); ++n) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(valid.data()), n);
  }
  for (size_t i = 0; i < valid.size(); ++i) {
    for (uint8_t flip : {0x01, 0x20, 0x80, 0xFF}) {
      std::string m = valid;
      m[i] = static_cast<char>(m[i] ^ flip);
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(m.data()), m.size());
      parsed += ParseSafetensors(m).ok();
    }
  }
  EXPECT_GT(parsed, 0);  // some flips (in data bytes) still parse
}

}  // namespace
}  // namespace quanta::nn

// Tensors: views share storage, contiguous() copies only when needed, casts,
// quantized storage and printing.
#include "core/tensor.h"

#include "core/ops.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

Tensor Iota(const Shape& shape) { return Arange(0, static_cast<double>(NumElements(shape))).View(shape); }

TEST(Tensor, CreationAndMetadata) {
  Tensor t = Tensor::FromVector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.strides(), (Strides{3, 1}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.dim(), 2);
  EXPECT_EQ(t.size(-1), 3);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.Describe(), "f32[2, 3]");
  EXPECT_EQ(t.ToVector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(Scalar(2.5).dim(), 0);
  EXPECT_EQ(Scalar(2.5).item<double>(), 2.5);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor x = Iota({2, 3, 4});
  Tensor v = x.View({6, 4});
  Tensor t = x.Transpose(0, 2);
  Tensor n = x.Narrow(1, 1, 2);
  Tensor s = x.Slice(2, 0, 4, 2);
  Tensor e = x.Select(0, 1).Unsqueeze(0).Expand({5, 3, 4});
  for (const Tensor* view : {&v, &t, &n, &s, &e}) EXPECT_TRUE(view->SharesStorageWith(x));
  EXPECT_EQ(t.shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(t.strides(), (Strides{1, 4, 12}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(n.offset(), 4);
  EXPECT_EQ(s.strides(), (Strides{12, 4, 2}));
  EXPECT_EQ(e.strides(), (Strides{0, 4, 1}));
  // Writing through a view is seen by the base tensor.
  Tensor col = x.Select(2, 3);  // x[:, :, 3]
  FillInplace(col, -1);
  std::vector<float> got = x.ToVector<float>();
  EXPECT_EQ(got[3], -1);
  EXPECT_EQ(got[7], -1);
  EXPECT_EQ(got[2], 2);
  EXPECT_EQ(s.ToVector<float>(), (std::vector<float>{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22}));
  EXPECT_EQ(t.Contiguous().ToVector<float>()[1], 12);  // t[0][0][1] = x[1][0][0]
}

TEST(Tensor, ViewOfNonContiguousMergesWhereStridesAllow) {
  Tensor x = Iota({4, 6});
  Tensor n = x.Narrow(1, 0, 4);            // (4, 4), strides (6, 1)
  EXPECT_EQ(n.View({4, 2, 2}).strides(), (Strides{6, 2, 1}));
  EXPECT_THROW(n.View({16}), Error);        // rows are not adjacent
  Tensor r = n.Reshape({16});               // copies
  EXPECT_FALSE(r.SharesStorageWith(x));
  EXPECT_EQ(r.ToVector<float>()[4], 6);
  EXPECT_EQ(x.View({-1, 3}).shape(), (Shape{8, 3}));
  EXPECT_EQ(x.Flatten().shape(), (Shape{24}));
  EXPECT_EQ(x.Unsqueeze(1).Squeeze().shape(), (Shape{4, 6}));
  EXPECT_EQ(x.Permute({1, 0}).shape(), (Shape{6, 4}));
}

TEST(Tensor, ContiguousCopiesOnlyWhenNeeded) {
  Tensor x = Iota({3, 4});
  EXPECT_TRUE(x.Contiguous().SharesStorageWith(x));
  Tensor t = x.Transpose(0, 1);
  Tensor c = t.Contiguous();
  EXPECT_FALSE(c.SharesStorageWith(x));
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.ToVector<float>(), (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  // A size-1 dim's stride does not matter for contiguity.
  EXPECT_TRUE(x.Narrow(0, 1, 1).is_contiguous());
  // So is any tensor without elements (PyTorch agrees), whatever its other sizes.
  EXPECT_TRUE(Tensor::Empty({8, 5, 0, 1}, DType::kU8).is_contiguous());
  EXPECT_TRUE(Tensor::Empty({0, 3}, DType::kF32).Transpose(0, 1).is_contiguous());
}

// Note [Copy runs] (backends/cpu/reference_elementwise.cc): strided copies to
// the same dtype move bits a run at a time (memcpy, fill, or a loop over 1, 2,
// 4 or 8-byte integers). For each width: a transpose (runs of stride 4), a
// stride-2 slice into a narrow of a wider tensor (short dense runs, the
// shortcut of a quantized ResNet), and broadcasts of a row and of one value
// (stride-0 runs), against values indexed by hand.
TEST(Tensor, StridedCopiesOfOneDTypeMoveExactValues) {
  for (DType dtype : {DType::kI8, DType::kBF16, DType::kI32, DType::kF64, DType::kQUInt8}) {
    SCOPED_TRACE(Name(dtype));
    auto make = [&](const Shape& shape) {
      Tensor t = Iota(shape);  // 0, 1, 2, ...: exact in every dtype here (at most 127 values)
      return dtype == DType::kQUInt8 ? Quantize(t, dtype, QuantParams::PerTensor(1.0, 0)) : t.To(dtype);
    };
    auto values = [&](const Tensor& t) {
      return dtype == DType::kQUInt8 ? [&] {
        std::vector<int32_t> v = t.IntRepr();
        return std::vector<double>(v.begin(), v.end());
      }()
                                     : t.ToVector<double>();
    };
    Tensor x = make({3, 4});
    EXPECT_EQ(values(x.Transpose(0, 1).Contiguous()), (std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
    // (2, 4, 3) -> every second of dim 1 (2, 2, 3), into channels 1..3 of a (2, 2, 5) zeros.
    Tensor src = make({2, 4, 3}).Slice(1, 0, 4, 2);
    Tensor dst = dtype == DType::kQUInt8 ? Quantize(Zeros({2, 2, 5}), dtype, QuantParams::PerTensor(1.0, 0))
                                         : Zeros({2, 2, 5}, dtype);
    dst.Narrow(2, 1, 3).CopyFrom(src);
    std::vector<double> want(20, 0);
    for (int n = 0; n < 2; ++n) {
      for (int h = 0; h < 2; ++h) {
        for (int c = 0; c < 3; ++c) want[n * 10 + h * 5 + 1 + c] = n * 12 + (2 * h) * 3 + c;
      }
    }
    EXPECT_EQ(values(dst), want);
    Tensor wide = dtype == DType::kQUInt8 ? Quantize(Zeros({3, 4}), dtype, QuantParams::PerTensor(1.0, 0))
                                          : Zeros({3, 4}, dtype);
    wide.CopyFrom(make({1, 4}));
    EXPECT_EQ(values(wide), (std::vector<double>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3}));
    wide.Transpose(0, 1).CopyFrom(make({1, 1}).Expand({4, 3}).Narrow(0, 0, 4));  // one value, strided target
    EXPECT_EQ(values(wide), std::vector<double>(12, 0));
  }
}

// ChannelsLast() and the layout it asks for (PyTorch's suggest_memory_format):
// three channels are reordered (a copy, values kept, NHWC strides); one channel
// is the same memory, marked by a channel stride of 1 (a view); a 1x1 image is
// left as it is and asks for nothing.
TEST(Tensor, ChannelsLastAndWhatItAsksFor) {
  Tensor x = Iota({2, 3, 2, 2});
  EXPECT_TRUE(x.is_contiguous() && !x.is_channels_last() && !x.suggests_channels_last());
  Tensor c = x.ChannelsLast();
  EXPECT_EQ(c.strides(), (Strides{12, 1, 6, 3}));
  EXPECT_TRUE(c.suggests_channels_last() && !c.SharesStorageWith(x));
  EXPECT_EQ(c.ToVector<float>(), x.ToVector<float>());
  EXPECT_TRUE(c.ChannelsLast().SharesStorageWith(c));
  Tensor one = Iota({2, 1, 3, 2});
  EXPECT_TRUE(one.is_contiguous() && one.is_channels_last() && !one.suggests_channels_last());
  Tensor marked = one.ChannelsLast();
  EXPECT_TRUE(marked.SharesStorageWith(one) && marked.suggests_channels_last() && marked.is_contiguous());
  EXPECT_EQ(marked.stride(1), 1);
  EXPECT_EQ(marked.ToVector<float>(), one.ToVector<float>());
  Tensor pixel = Iota({4, 5, 1, 1});
  EXPECT_FALSE(pixel.ChannelsLast().suggests_channels_last());
  EXPECT_TRUE(pixel.ChannelsLast().SharesStorageWith(pixel));
}

TEST(Tensor, CastsBetweenDTypes) {
  Tensor x = Tensor::FromVector<float>({-1.5f, 0.4f, 2.6f, 300.0f}, {4});
  EXPECT_EQ(x.To(DType::kI32).ToVector<int32_t>(), (std::vector<int32_t>{-1, 0, 2, 300}));
  EXPECT_EQ(x.To(DType::kBool).ToVector<bool>(), (std::vector<bool>{true, true, true, true}));
  EXPECT_EQ(x.To(DType::kF64).ToVector<double>()[1], static_cast<double>(0.4f));
  // f32 -> bf16 rounds to nearest even: 1 + 2^-8 ties down, 1 + 3 * 2^-8 ties up.
  Tensor ties = Tensor::FromVector<float>({1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f}, {2});
  std::vector<BFloat16> b = ties.To(DType::kBF16).ToVector<BFloat16>();
  EXPECT_EQ(b[0].bits, 0x3F80);
  EXPECT_EQ(b[1].bits, 0x3F82);
  std::vector<Half> h = Tensor::FromVector<float>({1.0f + 0x1p-11f}, {1}).To(DType::kF16).ToVector<Half>();
  EXPECT_EQ(h[0].bits, 0x3C00);
  // Every pair of plain dtypes converts (1 and 0 survive any of them).
  for (DType from : {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kI32, DType::kI64,
                     DType::kI8, DType::kU8, DType::kBool}) {
    for (DType to : {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kI32, DType::kI64,
                     DType::kI8, DType::kU8, DType::kBool}) {
      Tensor v = Tensor::FromVector<float>({1, 0}, {2}).To(from).To(to);
      EXPECT_EQ(v.dtype(), to);
      EXPECT_EQ(v.ToVector<float>(), (std::vector<float>{1, 0})) << Name(from) << "->" << Name(to);
    }
  }
  EXPECT_EQ(Tensor::FromVector<float>({255, 256}, {2}).To(DType::kU8).ToVector<int32_t>()[0], 255);
}

TEST(Tensor, QuantizedStorage) {
  QuantParams p = QuantParams::PerTensor(0.5, 2);
  Tensor q = Tensor::FromQuantized({-8, 7, 0, -1, 3}, {5}, DType::kQInt4, p);
  EXPECT_EQ(q.dtype(), DType::kQInt4);
  EXPECT_EQ(q.storage()->bytes(), 3u);  // five nibbles in three bytes
  auto* bytes = static_cast<const uint8_t*>(q.raw_data());
  EXPECT_EQ(bytes[0], 0x78);
  EXPECT_EQ(bytes[1], 0xF0);
  EXPECT_EQ(bytes[2], 0x03);
  EXPECT_EQ(q.IntRepr(), (std::vector<int32_t>{-8, 7, 0, -1, 3}));
  EXPECT_EQ(q.qparams(), p);
  // An odd-offset view of packed storage reads the right nibbles, and copies.
  Tensor tail = q.Narrow(0, 1, 3);
  EXPECT_EQ(tail.IntRepr(), (std::vector<int32_t>{7, 0, -1}));
  Tensor c = tail.Clone();
  EXPECT_EQ(c.offset(), 0);
  EXPECT_EQ(c.IntRepr(), (std::vector<int32_t>{7, 0, -1}));
  EXPECT_EQ(q.Slice(0, 0, 5, 2).Contiguous().IntRepr(), (std::vector<int32_t>{-8, 0, 3}));

  QuantParams pc = QuantParams::PerChannel({0.1, 0.2}, {0, 1}, 0);
  Tensor q8 = Tensor::FromQuantized({-128, 127, 5, 6}, {2, 2}, DType::kQInt8, pc);
  EXPECT_EQ(q8.IntRepr(), (std::vector<int32_t>{-128, 127, 5, 6}));
  EXPECT_EQ(q8.qparams().scheme, QScheme::kPerChannel);
  Tensor u8 = Tensor::FromQuantized({0, 255}, {2}, DType::kQUInt8, QuantParams::PerTensor(1, 128));
  EXPECT_EQ(u8.IntRepr(), (std::vector<int32_t>{0, 255}));
  EXPECT_EQ(u8.storage()->bytes(), 2u);
}

TEST(Tensor, Printing) {
  Tensor x = Tensor::FromVector<float>({1, 2.5f, -3, 4}, {2, 2});
  EXPECT_EQ(x.ToString(), "tensor([[1.0000, 2.5000],\n        [-3.0000, 4.0000]], dtype=f32)");
  EXPECT_EQ(Tensor::FromVector<int64_t>({1, 2, 3}, {3}).ToString(), "tensor([1, 2, 3], dtype=i64)");
  EXPECT_EQ(Scalar(2).ToString(), "tensor(2.0000, dtype=f32)");
  Tensor q = Tensor::FromQuantized({-3, 4}, {2}, DType::kQInt8, QuantParams::PerTensor(0.25, 1));
  EXPECT_EQ(q.ToString(), "tensor([-3, 4], dtype=qint8, scale=0.25, zero_point=1)");
  Tensor pc = Tensor::FromQuantized({1, 2}, {2, 1}, DType::kQInt4,
                                    QuantParams::PerChannel({0.5, 0.125}, {0, -1}, 0));
  EXPECT_EQ(pc.ToString(),
            "tensor([[1],\n        [2]], dtype=qint4, axis=0, scales=[0.5, 0.125], zero_points=[0, -1])");
  std::string big = Arange(0, 2000).ToString();
  EXPECT_NE(big.find("2.0000, ..., 1997.0000"), std::string::npos) << big.substr(0, 80);
}

}  // namespace
}  // namespace quanta

// FromBlob: a tensor over memory the caller owns. The values are read in place
// (column-major strides below), writes reach the caller's memory, views keep it
// alive, and `release` runs once, when the last tensor is gone.
namespace quanta {
namespace {

TEST(Tensor, FromBlobViewsForeignMemoryAndReleasesItOnce) {
  std::vector<float> memory = {1, 2, 3, 4, 5, 6};  // column-major (2, 3): [[1, 3, 5], [2, 4, 6]]
  int released = 0;
  Tensor view;
  {
    Tensor t = Tensor::FromBlob(memory.data(), {2, 3}, {1, 2}, DType::kF32, Device::Cpu(), [&] { ++released; });
    EXPECT_EQ(t.raw_data(), memory.data());
    EXPECT_FALSE(t.is_contiguous());
    EXPECT_EQ(t.Contiguous().ToVector<float>(), (std::vector<float>{1, 3, 5, 2, 4, 6}));
    EXPECT_EQ(t.storage()->bytes(), 6 * sizeof(float));
    FillInplace(t, 0.5);
    EXPECT_EQ(memory[4], 0.5f);
    view = t.Select(0, 1);  // [2, 4, 6] -> a view of the same memory
  }
  EXPECT_EQ(released, 0);
  EXPECT_EQ(view.ToVector<float>(), (std::vector<float>{0.5, 0.5, 0.5}));
  view = Tensor();
  EXPECT_EQ(released, 1);
  // An empty tensor owns no bytes; negative strides and quantized dtypes are refused.
  EXPECT_EQ(Tensor::FromBlob(memory.data(), {0, 3}, {3, 1}, DType::kF32, Device::Cpu(), nullptr).storage()->bytes(), 0u);
  EXPECT_THROW(Tensor::FromBlob(memory.data(), {2}, {-1}, DType::kF32, Device::Cpu(), nullptr), Error);
  EXPECT_THROW(Tensor::FromBlob(memory.data(), {2}, {1}, DType::kQInt8, Device::Cpu(), nullptr), Error);
}

}  // namespace
}  // namespace quanta

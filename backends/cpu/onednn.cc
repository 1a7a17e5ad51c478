// oneDNN 2.6 (v2 API: op::desc, then primitive_desc(desc, attr, engine)).
// Every oneDNN call runs inside QUANTA_ONEDNN, which turns dnnl::error into
// quanta::Error naming the op, file and line.
#include "backends/cpu/onednn.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <atomic>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/reference_kernels.h"
#include "core/backend.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/tensor.h"
#include "oneapi/dnnl/dnnl.hpp"

extern "C" void omp_set_num_threads(int);

#define QUANTA_ONEDNN(op, ...)                                                            \
  do {                                                                                    \
    try {                                                                                 \
      __VA_ARGS__;                                                                        \
    } catch (const dnnl::error& e) {                                                      \
      throw ::quanta::Error(absl::StrCat(op, ": oneDNN failed (status ",                  \
                                         static_cast<int>(e.status), ": ", e.what(),      \
                                         ") at ", __FILE__, ":", __LINE__));              \
    }                                                                                     \
  } while (0)

namespace quanta::cpu {
namespace {

using dnnl::memory;
using Dims = memory::dims;

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// Note [No silent slow path] in core/backend.h: the reference kernel runs, and
// the CPU backend counts it and warns once per op and case.
void Fallback(const KernelCall& c, std::string_view why) {
  std::vector<std::string> inputs;
  for (const Tensor& t : c.in) inputs.push_back(t.Describe());
  FindBackend(DeviceType::kCpu)->NoteFallback(c.op, absl::StrCat(absl::StrJoin(inputs, ", "), ": ", std::string(why)));
  ReferenceKernel(c.op)(c);
}

bool ToOneDnn(DType d, memory::data_type* out) {
  switch (d) {
    case DType::kF32: *out = memory::data_type::f32; return true;
    case DType::kBF16: *out = memory::data_type::bf16; return true;
    case DType::kF16: *out = memory::data_type::f16; return true;
    default: return false;
  }
}

// One cache for every primitive, keyed by op, shapes, strides, dtypes and attrs.
struct CachedConv;
struct Cache {
  std::mutex mu;
  std::unordered_map<std::string, dnnl::matmul> matmuls;
  std::unordered_map<std::string, std::shared_ptr<CachedConv>> convs;
};
Cache& GetCache() {
  static Cache* cache = new Cache();
  return *cache;
}

// oneDNN takes a strided operand when one of its last two dims is unit-stride and
// no stride is 0 (expanded views are made contiguous first).
bool PlainForMatmul(const Tensor& t) {
  for (int d = 0; d < t.dim(); ++d) {
    if (t.stride(d) == 0 && t.size(d) != 1) return false;
  }
  return t.stride(-1) == 1 || t.stride(-2) == 1;
}

Strides FixUnitStrides(const Tensor& t) {
  // Dims of size 1 may carry any stride; give them one oneDNN accepts.
  Strides s = t.strides();
  for (int d = t.dim() - 1; d >= 0; --d) {
    if (t.size(d) == 1) s[d] = d + 1 < t.dim() ? s[d + 1] * t.size(d + 1) : 1;
  }
  return s;
}

// Runs a primitive creation; false when oneDNN has no implementation for it (the
// caller falls back to the reference kernel). Other failures throw quanta::Error.
template <typename F>
bool Implemented(F&& create) {
  try {
    create();
    return true;
  } catch (const dnnl::error& e) {
    if (e.status == dnnl_unimplemented) return false;
    throw;  // the caller's QUANTA_ONEDNN reports it
  }
}

// Whether prim runs one of oneDNN's GEMM-based implementations ("gemm:jit",
// "x64:gemm_s8u8s32:jit"; not brgemm's "brg:..."), whose JIT kernels a signal
// handler must not interrupt (Note [Signals stay off the pool] in
// core/parallel.cc). Only those hold signals: the guard costs two system calls
// (1.6 us together on a Zen 3 VM, timed as a loop of pthread_sigmask pairs),
// which a batch-1 int8 ResNet-20 (about 20 convolutions in 0.6 ms) would feel,
// and the direct convolutions ("jit:avx2", "jit_uni_int8:avx2") keep their
// stack pointer: onednn_test runs them under a stream of signals unguarded.
bool RunsGemm(const dnnl::primitive& prim) {
  const char* impl = nullptr;
  if (dnnl_primitive_desc_query(prim.get_primitive_desc(), dnnl_query_impl_info_str, 0, &impl) != dnnl_success ||
      impl == nullptr) {
    return true;
  }
  return std::string_view(impl).find("gemm") != std::string_view::npos;
}

}  // namespace

void OneDnnMatmul(const KernelCall& c) {
  memory::data_type dt;
  if (c.out[0].numel() == 0 || c.in[0].size(-1) == 0) return ReferenceKernel(c.op)(c);  // nothing to multiply
  if (!ToOneDnn(c.in[0].dtype(), &dt)) return Fallback(c, "a dtype oneDNN's matmul does not take");
  Tensor a = PlainForMatmul(c.in[0]) ? c.in[0] : c.in[0].Contiguous();
  Tensor b = PlainForMatmul(c.in[1]) ? c.in[1] : c.in[1].Contiguous();
  const Tensor& y = c.out[0];
  Dims a_dims(a.shape()), b_dims(b.shape()), y_dims(y.shape());
  Dims a_strides = FixUnitStrides(a), b_strides = FixUnitStrides(b), y_strides(y.strides());
  // oneDNN fixes its thread count when a primitive is created: part of the key.
  std::string key = absl::StrCat("matmul|", GetNumThreads(), "|", static_cast<int>(dt), "|", absl::StrJoin(a_dims, ","), "/",
                                 absl::StrJoin(a_strides, ","), "|", absl::StrJoin(b_dims, ","), "/",
                                 absl::StrJoin(b_strides, ","), "|", absl::StrJoin(y_dims, ","));
  memory::desc a_md(a_dims, dt, a_strides), b_md(b_dims, dt, b_strides), y_md(y_dims, dt, y_strides);
  dnnl::matmul prim;
  Cache& cache = GetCache();
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    auto it = cache.matmuls.find(key);
    if (it != cache.matmuls.end()) {
      prim = it->second;
    } else {
      // An empty primitive is remembered as "unsupported".
      QUANTA_ONEDNN("matmul", Implemented([&] {
        dnnl::matmul::desc desc(a_md, b_md, y_md);
        prim = dnnl::matmul(dnnl::matmul::primitive_desc(desc, Engine()));
      }));
      cache.matmuls.emplace(key, prim);
    }
  }
  if (!prim) return Fallback(c, "oneDNN has no kernel for it here (e.g. f16 without AVX512-FP16)");
  QUANTA_ONEDNN("matmul", {
    std::optional<SignalsDeferred> held;
    if (RunsGemm(prim)) held.emplace();
    dnnl::stream stream(Engine());
    memory a_mem(a_md, Engine(), a.raw_data()), b_mem(b_md, Engine(), b.raw_data()),
        y_mem(y_md, Engine(), y.raw_data());
    prim.execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, y_mem}});
    stream.wait();
  });
}

namespace {

// Note [Winograd convolutions]: f32 3x3 convolutions at stride 1 with 32 or
// more input and output channels run oneDNN's Winograd F(4x4, 3x3) kernels
// (jit_wino_4x3), which do about a quarter of direct convolution's multiplies
// in exchange for transforms. Measured with oneDNN 2.6 on Zen 4 at 1 and 2
// threads, batch 128, the 3x3 layers of ResNet-20 and fmnist_resnet8, Winograd
// with the reorders to its blocked layout and back against direct on
// channels-last tensors (//backends/cpu:bench_conv_layouts):
// - forward and backward-data together are 1.1-1.4x faster at 32 channels and
//   1.4-1.8x at 64 and 128, and 6.5x slower at 16 channels, where direct stays;
// - backward-weights is 1.2-1.7x faster at 64 channels, within 10% either way
//   at 32, and at 128 1.7x faster on one thread but 1.6x slower on two, so it
//   takes Winograd only from 48 to 96 channels.
// A fixed rule rather than timing each shape at run time: the same program
// computes the same bits on every run. Where oneDNN has no Winograd kernel (an
// ISA without AVX-512) the direct one runs. Winograd rounds differently from
// direct (its transforms add and subtract before the products): both agree
// with the f64 reference to f32 rounding (tests/backends:onednn_test), not to
// each other's bits. `Backend::SetOption("winograd", "0")` turns it off.
std::atomic<bool> winograd_enabled{true};
std::atomic<int64_t> winograd_primitives{0};
std::atomic<int64_t> packed_matmul_primitives{0};  // Note [Packed matmul weights]

enum class ConvPass { kForward, kBackwardData, kBackwardWeights };

// What every convolution primitive (forward and both backwards) shares: the
// problem's descriptors in Quanta's plain layouts and in "any" layout.
struct ConvProblem {
  memory::data_type dt;
  Dims x_dims, w_dims, y_dims, strides, dilates, padding;
  int64_t groups, out_channels;
  bool bias;
  bool nhwc = false;  // activations channels-last, handed to the primitive as they are
  bool winograd = false;  // Note [Winograd convolutions]: blocked activations, reordered around the call

  // Shapes: x (N, C, H, W), w (O, C/G, KH, KW), y (N, O, OH, OW).
  ConvProblem(const Shape& x, const Shape& w, const Shape& y, const OpAttrs& at, bool has_bias, memory::data_type type)
      : dt(type), x_dims(x), y_dims(y), strides{at.stride[0], at.stride[1]},
        dilates{at.dilation[0] - 1, at.dilation[1] - 1}, padding{at.padding[0], at.padding[1]}, groups(at.groups),
        out_channels(w[0]), bias(has_bias) {
    w_dims = groups == 1 ? Dims(w) : Dims{groups, w[0] / groups, w[1], w[2], w[3]};
  }
  std::string Key(const char* op) const {
    return absl::StrCat(op, "|", GetNumThreads(), "|", static_cast<int>(dt), "|", absl::StrJoin(x_dims, ","), "|",
                        absl::StrJoin(w_dims, ","), "|", bias, "|", absl::StrJoin(strides, ","), "|",
                        absl::StrJoin(dilates, ","), "|", absl::StrJoin(padding, ","), "|", nhwc, "|", winograd);
  }
  // Whether this pass takes Winograd (Note [Winograd convolutions]); sets `winograd`.
  bool ChooseWinograd(ConvPass pass) {
    const int64_t lo = std::min(w_dims[0], w_dims[1]), hi = std::max(w_dims[0], w_dims[1]);
    winograd = winograd_enabled.load(std::memory_order_relaxed) && dt == memory::data_type::f32 && groups == 1 &&
               w_dims.size() == 4 && w_dims[2] == 3 && w_dims[3] == 3 && strides == Dims{1, 1} &&
               dilates == Dims{0, 0} && lo >= 32 && (pass != ConvPass::kBackwardWeights || (lo >= 48 && hi <= 96));
    return winograd;
  }
  dnnl::algorithm Algorithm() const {
    return winograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
  }
  memory::format_tag ActTag() const { return nhwc ? memory::format_tag::nhwc : memory::format_tag::nchw; }
  memory::desc XPlain() const { return memory::desc(x_dims, dt, ActTag()); }
  memory::desc WPlain() const {
    return memory::desc(w_dims, dt, groups == 1 ? memory::format_tag::oihw : memory::format_tag::goihw);
  }
  memory::desc YPlain() const { return memory::desc(y_dims, dt, ActTag()); }
  // The primitive's activation descriptors: NHWC as is, or "any" (blocked,
  // reordered around the call; Winograd takes only blocked).
  memory::desc XWant() const { return nhwc && !winograd ? XPlain() : Any(x_dims); }
  memory::desc YWant() const { return nhwc && !winograd ? YPlain() : Any(y_dims); }
  memory::desc BiasDesc() const {
    return bias ? memory::desc({out_channels}, dt, memory::format_tag::x) : memory::desc();
  }
  memory::desc Any(const Dims& d) const { return memory::desc(d, dt, memory::format_tag::any); }
  dnnl::convolution_forward::primitive_desc Forward() const {
    dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training, Algorithm(), XWant(), Any(w_dims),
                                         BiasDesc(), YWant(), strides, dilates, padding, padding);
    return dnnl::convolution_forward::primitive_desc(desc, Engine());
  }
};

// One argument of a primitive: Quanta's plain buffer, and the layout the
// primitive wants (reordered in before, or out after, execution).
struct Arg {
  int id;
  memory::desc plain, want;
  void* data;
  bool input;
};

struct CachedConv {
  dnnl::primitive prim;
  memory::desc want[3];  // the primitive's layouts of its three tensor arguments
};

// Looks up or builds a convolution primitive; nullptr when oneDNN has none.
template <typename Build>
std::shared_ptr<CachedConv> ConvPrimitive(const char* op, const std::string& key, Build build) {
  Cache& cache = GetCache();
  std::lock_guard<std::mutex> lock(cache.mu);
  auto it = cache.convs.find(key);
  if (it != cache.convs.end()) return it->second;
  std::shared_ptr<CachedConv> entry;
  QUANTA_ONEDNN(op, Implemented([&] { entry = build(); }));
  cache.convs.emplace(key, entry);  // nullptr: remembered as unsupported
  return entry;
}

// An f32/bf16 convolution pass's primitive for p: Winograd where p chose it
// and oneDNN builds it (any refusal: direct, p.winograd cleared), else direct.
// build reads p.
template <typename Build>
std::shared_ptr<CachedConv> FloatConvPrimitive(const char* op, const char* pass, ConvProblem& p, Build build) {
  return ConvPrimitive(op, p.Key(pass), [&] {
    if (p.winograd) {
      try {
        std::shared_ptr<CachedConv> entry = build();
        ++winograd_primitives;
        return entry;
      } catch (const dnnl::error&) {
        p.winograd = false;
      }
    }
    return build();
  });
}

// Note [Weight cache]: weights in constant storage (Note [Constant storage] in
// core/storage.h: a converted model's) are reordered into a primitive's layout
// once and kept, keyed by their address and that layout, until the storage is
// freed (OneDnnForget). qint4 weights are unpacked on the same miss, so a
// converted int4 model stores 4 bits and runs on int8 VNNI with no per-call cost.
struct SplitWeights;
struct WeightCache {
  std::mutex mu;
  std::unordered_map<const void*, std::vector<std::pair<memory::desc, memory>>> entries;
  // Note [Exact integers without VNNI]: per constant weight, its largest |w| and split.
  std::unordered_map<const void*, std::shared_ptr<const SplitWeights>> splits;
};
WeightCache& GetWeightCache() {
  static WeightCache* cache = new WeightCache();
  return *cache;
}

// The weights in the layout `want`: from the cache (constant storage), or
// reordered now. qint4 is unpacked to s8 first. `plain` describes w (or its
// unpacked copy) as Quanta lays it out.
memory WeightsFor(const Tensor& w, const memory::desc& plain, const memory::desc& want, dnnl::stream& stream) {
  bool constant = w.storage()->constant();
  WeightCache& cache = GetWeightCache();
  if (constant) {
    std::lock_guard<std::mutex> lock(cache.mu);
    for (auto& [desc, mem] : cache.entries[w.raw_data()]) {
      if (desc == want) return mem;
    }
  }
  Tensor w8 = w.dtype() == DType::kQInt4 ? UnpackQInt4(w) : w;
  memory user(plain, Engine(), w8.raw_data());
  memory out(want, Engine());
  if (plain == want && !constant && w8.SharesStorageWith(w)) {
    out = user;
  } else {
    dnnl::reorder(user, out).execute(stream, user, out);
    stream.wait();
  }
  if (constant) {
    std::lock_guard<std::mutex> lock(cache.mu);
    cache.entries[w.raw_data()].emplace_back(want, out);
  }
  return out;
}

// Note [Exact integers without VNNI]
// Without VNNI (AVX2, AVX-512 before Cascade Lake), oneDNN's int8 kernels
// multiply u8 by s8 with vpmaddubsw, which adds each pair of products into a
// saturating int16: 2 * 255 * 127 overflows it. For an s8 source oneDNN also
// halves the weights (scale_adjust 0.5, "sa0.5" in ONEDNN_VERBOSE), which
// rounds every odd weight. Either way the integer model would no longer compute
// what its fake-quant model computed (measured on a Zen 3 EPYC: logits off by
// 3.5 at W8A8, top-1 agreement 22-97%). So, on such CPUs only:
// - an s8 source is handed over as u8 (x + 128, zero point + 128: the same real
//   values), which oneDNN takes without the adjustment;
// - weights with some |w| > 64 run as two halves w = low + high, |low| <= 64,
//   |high| <= 63, so that a pair of products stays within 2 * 255 * 64 = 32640
//   (not where the source's range is narrower: 2 * a_max * max|w| <= 32767
//   needs no split, so 7-bit activations [0, 127], PyTorch x86's reduce_range,
//   and 4-bit ones run every int8 weight whole, on half the instructions):
//   the high half's products (in the layer's output units) enter the low half's
//   epilogue as its first post-op, an f32 add before the residual and the ReLU.
// 4-bit weights (|w| <= 8) never split. With VNNI (vpdpbusd accumulates in
// int32) nothing changes. tests/backends:onednn_avx2_test runs the int8 tests
// with oneDNN limited to AVX2, on any machine.
bool HasVnni() {
  static const bool vnni = [] {
    switch (dnnl::get_effective_cpu_isa()) {
      case dnnl::cpu_isa::avx512_core_vnni:
      case dnnl::cpu_isa::avx512_core_bf16:
      case dnnl::cpu_isa::avx512_core_amx:
      case dnnl::cpu_isa::avx2_vnni:
        return true;
      default:
        return false;
    }
  }();
  return vnni;
}

struct SplitWeights {
  int32_t max_abs = 0;  // the largest |w|
  Tensor low, high;     // qint8, w's shape and parameters; w = low + high (max_abs > 64 only)
};

std::atomic<size_t> split_calls{0};  // OneDnnSplitWeightCalls()

// The split of w when this CPU and this source need one (Note [Exact integers
// without VNNI]), else null; remembered for weights in constant storage.
// `x`: the source as oneDNN gets it (u8: an s8 one comes shifted).
std::shared_ptr<const SplitWeights> SplitFor(const Tensor& w, const Tensor& x) {
  if (HasVnni() || w.dtype() != DType::kQInt8) return nullptr;
  // A pair of products stays within int16 while 2 * a_max * |w| <= 32767:
  // |w| <= 64 for any u8 source, |w| <= 128 (every int8 weight) for a 7-bit one.
  const QuantParams& px = x.qparams();
  const int64_t a_max = px.quant_min != 0 || px.quant_max != 0 ? std::clamp<int64_t>(px.quant_max, 1, 255) : 255;
  const int64_t limit = 32767 / (2 * a_max);
  bool constant = w.storage()->constant();
  WeightCache& cache = GetWeightCache();
  std::shared_ptr<const SplitWeights> split;
  if (constant) {
    std::lock_guard<std::mutex> lock(cache.mu);
    auto it = cache.splits.find(w.raw_data());
    if (it != cache.splits.end()) split = it->second;
  }
  if (!split) {
    std::vector<int32_t> v = w.IntRepr();
    auto made = std::make_shared<SplitWeights>();
    for (int32_t e : v) made->max_abs = std::max(made->max_abs, std::abs(e));
    // The halves fit every source (2 * 255 * 64 = 32640); made for this call's
    // source only where it needs them, and for constant weights once for all.
    if (made->max_abs > 64 && (constant || made->max_abs > limit)) {
      std::vector<int32_t> low(v.size()), high(v.size());
      for (size_t i = 0; i < v.size(); ++i) {
        low[i] = std::clamp(v[i], -64, 64);
        high[i] = v[i] - low[i];
      }
      made->low = Tensor::FromQuantized(low, w.shape(), DType::kQInt8, w.qparams());
      made->high = Tensor::FromQuantized(high, w.shape(), DType::kQInt8, w.qparams());
      if (constant) {  // their reorders are cached too, until w is freed (OneDnnForget)
        made->low.storage()->MarkConstant();
        made->high.storage()->MarkConstant();
      }
    }
    split = made;
    if (constant) {
      std::lock_guard<std::mutex> lock(cache.mu);
      cache.splits.emplace(w.raw_data(), split);
    }
  }
  if (split->max_abs <= limit) return nullptr;
  split_calls.fetch_add(1, std::memory_order_relaxed);
  return split;
}

// Runs `kernel` with an s8 source handed over as u8 when this CPU needs it
// (Note [Exact integers without VNNI]); false when it does not.
bool WithUnsignedSource(const KernelCall& c, Kernel kernel) {
  const Tensor& x = c.in[0];
  if (HasVnni() || x.dtype() != DType::kQInt8 || x.numel() == 0) return false;
  // The bytes x's view spans, shifted: s8 v -> u8 v + 128 is v ^ 0x80.
  int64_t span = 1;
  for (int d = 0; d < x.dim(); ++d) span += (x.size(d) - 1) * x.stride(d);
  QuantParams p = x.qparams();
  p.zero_points[0] += 128;
  if (p.quant_min != 0 || p.quant_max != 0) p.quant_min += 128, p.quant_max += 128;
  Tensor flat = Tensor::Empty({span}, DType::kQUInt8, Device::Cpu(), p);
  const uint8_t* from = static_cast<const uint8_t*>(x.raw_data());
  uint8_t* to = static_cast<uint8_t*>(flat.raw_data());
  for (int64_t i = 0; i < span; ++i) to[i] = from[i] ^ 0x80;
  std::vector<Tensor> in(c.in.begin(), c.in.end());
  in[0] = flat.AsStrided(x.shape(), x.strides(), 0);
  kernel(KernelCall{c.op, in, c.out, c.attrs});
  return true;
}

// Note [oneDNN buffers from the block cache]: a oneDNN memory created without a
// handle allocates its own buffer with malloc, which serves large requests by
// mmap (or trims the heap when they are freed), so that every page of every
// reorder buffer was faulted in and zeroed by the kernel again on every call
// (bench_quant's ResNet-20 steps on Zen 4, perf stat: 1.36 M page faults, and
// 19% less CPU time with glibc's trimming and mmap threshold turned off; with
// the buffers below, 0.17 M page faults). Temporary
// buffers (the reorders to and from a primitive's layout) come from the
// backend's block cache instead, as tensors that `keep` holds until the
// primitive has run.
memory Temporary(const memory::desc& md, std::vector<Tensor>& keep) {
  keep.push_back(Tensor::Empty({static_cast<int64_t>(md.get_size())}, DType::kU8));
  return memory(md, Engine(), keep.back().raw_data());
}

// Runs a primitive with `args` already bound (weights from the cache, scales,
// zero points) and `layout_args` bound through reorders where Quanta's layout
// differs from the primitive's; reorders outputs back.
void ExecuteWith(const dnnl::primitive& prim, std::unordered_map<int, memory> args, const std::vector<Arg>& layout_args,
                 dnnl::stream& stream) {
  std::optional<SignalsDeferred> held;
  if (RunsGemm(prim)) held.emplace();
  std::vector<std::pair<memory, memory>> outputs;
  std::vector<Tensor> keep;  // Note [oneDNN buffers from the block cache]
  for (const Arg& a : layout_args) {
    memory user(a.plain, Engine(), a.data);
    if (a.plain == a.want) {
      args.emplace(a.id, user);
      continue;
    }
    memory tmp = Temporary(a.want, keep);
    if (a.input) {
      dnnl::reorder(user, tmp).execute(stream, user, tmp);
    } else {
      outputs.emplace_back(tmp, user);
    }
    args.emplace(a.id, tmp);
  }
  prim.execute(stream, args);
  for (auto& [from, to] : outputs) dnnl::reorder(from, to).execute(stream, from, to);
  stream.wait();
}

// ExecuteWith with every argument bound through its layout.
void Execute(const dnnl::primitive& prim, const std::vector<Arg>& args) {
  dnnl::stream stream(Engine());
  ExecuteWith(prim, {}, args, stream);
}

// (N, C, H, W) memory in NHWC order. Where it is also NCHW order (one channel,
// or 1x1 images) either description is true; both operands must be NHWC for
// the primitive to take them as they are.
bool IsNhwc(const Tensor& t) { return t.dim() == 4 && t.is_channels_last(); }

bool ConvDtype(const KernelCall& c, memory::data_type* dt) {
  return ToOneDnn(c.in[0].dtype(), dt) && c.out[0].numel() > 0 && c.in[0].numel() > 0 && c.in[1].numel() > 0;
}

}  // namespace

// x (N, C, H, W), w (O, C/G, KH, KW), optional bias (O): contiguous. y (N, O, OH, OW).
// Weights in constant storage come from the weight cache (Note [Weight cache]).
void OneDnnConv2d(const KernelCall& c) {
  memory::data_type dt;
  if (!ConvDtype(c, &dt)) return Fallback(c, "a dtype oneDNN's convolution does not take");
  const Tensor &x = c.in[0], &w = c.in[1], &y = c.out[0];
  const Tensor* bias = c.in.size() > 2 ? &c.in[2] : nullptr;
  ConvProblem p(x.shape(), w.shape(), y.shape(), c.attrs, bias != nullptr, dt);
  p.nhwc = IsNhwc(x) && IsNhwc(y);
  p.ChooseWinograd(ConvPass::kForward);
  auto entry = FloatConvPrimitive("conv2d", "conv", p, [&] {
    auto pd = p.Forward();
    return std::make_shared<CachedConv>(
        CachedConv{dnnl::convolution_forward(pd), {pd.src_desc(), pd.weights_desc(), pd.dst_desc()}});
  });
  if (!entry) return Fallback(c, "oneDNN has no primitive for it");
  if (w.storage()->constant()) {
    QUANTA_ONEDNN("conv2d", {
      dnnl::stream stream(Engine());
      std::unordered_map<int, memory> args = {{DNNL_ARG_WEIGHTS, WeightsFor(w, p.WPlain(), entry->want[1], stream)}};
      if (bias) args.emplace(DNNL_ARG_BIAS, memory(p.BiasDesc(), Engine(), bias->raw_data()));
      ExecuteWith(entry->prim, std::move(args),
                  {{DNNL_ARG_SRC, p.XPlain(), entry->want[0], x.raw_data(), true},
                   {DNNL_ARG_DST, p.YPlain(), entry->want[2], y.raw_data(), false}},
                  stream);
    });
    return;
  }
  std::vector<Arg> args = {{DNNL_ARG_SRC, p.XPlain(), entry->want[0], x.raw_data(), true},
                           {DNNL_ARG_WEIGHTS, p.WPlain(), entry->want[1], w.raw_data(), true},
                           {DNNL_ARG_DST, p.YPlain(), entry->want[2], y.raw_data(), false}};
  if (bias) args.push_back({DNNL_ARG_BIAS, p.BiasDesc(), p.BiasDesc(), bias->raw_data(), true});
  QUANTA_ONEDNN("conv2d", Execute(entry->prim, args));
}

// grad_y (N, O, OH, OW), w (O, C/G, KH, KW) -> grad_x (N, C, H, W).
void OneDnnConv2dBackwardInput(const KernelCall& c) {
  memory::data_type dt;
  if (!ConvDtype(c, &dt)) return Fallback(c, "a dtype oneDNN's convolution does not take");
  const Tensor &gy = c.in[0], &w = c.in[1], &gx = c.out[0];
  ConvProblem p(gx.shape(), w.shape(), gy.shape(), c.attrs, false, dt);
  p.nhwc = IsNhwc(gy) && IsNhwc(gx);
  p.ChooseWinograd(ConvPass::kBackwardData);
  auto entry = FloatConvPrimitive("conv2d_backward_input", "conv_bwd_data", p, [&] {
    dnnl::convolution_backward_data::desc desc(p.Algorithm(), p.XWant(),
                                               p.Any(p.w_dims), p.YWant(), p.strides, p.dilates, p.padding,
                                               p.padding);
    auto pd = dnnl::convolution_backward_data::primitive_desc(desc, Engine(), p.Forward());
    return std::make_shared<CachedConv>(CachedConv{dnnl::convolution_backward_data(pd),
                                                   {pd.diff_dst_desc(), pd.weights_desc(), pd.diff_src_desc()}});
  });
  if (!entry) return Fallback(c, "oneDNN has no primitive for it");
  QUANTA_ONEDNN("conv2d_backward_input",
                Execute(entry->prim, {{DNNL_ARG_DIFF_DST, p.YPlain(), entry->want[0], gy.raw_data(), true},
                                      {DNNL_ARG_WEIGHTS, p.WPlain(), entry->want[1], w.raw_data(), true},
                                      {DNNL_ARG_DIFF_SRC, p.XPlain(), entry->want[2], gx.raw_data(), false}}));
}

// grad_y (N, O, OH, OW), x (N, C, H, W) -> grad_w (O, C/G, KH, KW).
void OneDnnConv2dBackwardWeight(const KernelCall& c) {
  memory::data_type dt;
  if (!ConvDtype(c, &dt)) return Fallback(c, "a dtype oneDNN's convolution does not take");
  const Tensor &gy = c.in[0], &x = c.in[1], &gw = c.out[0];
  ConvProblem p(x.shape(), gw.shape(), gy.shape(), c.attrs, false, dt);
  p.nhwc = IsNhwc(gy) && IsNhwc(x);
  p.ChooseWinograd(ConvPass::kBackwardWeights);
  auto entry = FloatConvPrimitive("conv2d_backward_weight", "conv_bwd_weights", p, [&] {
    dnnl::convolution_backward_weights::desc desc(p.Algorithm(), p.XWant(),
                                                  p.Any(p.w_dims), p.YWant(), p.strides, p.dilates,
                                                  p.padding, p.padding);
    auto pd = dnnl::convolution_backward_weights::primitive_desc(desc, Engine(), p.Forward());
    return std::make_shared<CachedConv>(CachedConv{dnnl::convolution_backward_weights(pd),
                                                   {pd.diff_dst_desc(), pd.src_desc(), pd.diff_weights_desc()}});
  });
  if (!entry) return Fallback(c, "oneDNN has no primitive for it");
  QUANTA_ONEDNN("conv2d_backward_weight",
                Execute(entry->prim, {{DNNL_ARG_DIFF_DST, p.YPlain(), entry->want[0], gy.raw_data(), true},
                                      {DNNL_ARG_SRC, p.XPlain(), entry->want[1], x.raw_data(), true},
                                      {DNNL_ARG_DIFF_WEIGHTS, p.WPlain(), entry->want[2], gw.raw_data(), false}}));
}

// What oneDNN's int8 primitives need from Quanta's parameters, for input `in`,
// symmetric weights `w` with `channels` scales (1 or one per output channel),
// optional f32 bias, the post-ops, and output y. oneDNN computes
//   dst = zero_out + post_ops(output_scale[c] * (acc + bias'[c]))
// and rounds: bias' = bias / (s_in s_w[c]). Without a residual, output_scale =
// s_in s_w[c] / s_out and the post-ops are ReLU; with one, output_scale = s_in
// s_w[c] / s_r (the residual's units: 1 for f32), then add the residual as stored
// (its integers when quantized), subtract its zero point, ReLU, and scale by
// s_r / s_out. A narrowed output range (4-bit activations in an 8-bit container)
// ends in a clip.
struct IntegerEpilogue {
  std::vector<float> scales, bias;
  int32_t zero_in, zero_out;
  memory::data_type src_dt, dst_dt, residual_dt = memory::data_type::f32;
  bool residual, relu, gelu;
  float inv_out_scale = 1, residual_zero = 0;
  float clip_lo = 0, clip_hi = 0;
  bool clip = false;
  // Note [Exact integers without VNNI]: the high half of split weights, already in
  // this epilogue's units, added first (f32, correction_md's layout).
  bool correction = false;
  memory::desc correction_md;

  // channels: output scales (1 or outputs); outputs: output channels (O or N).
  IntegerEpilogue(const KernelCall& c, const Tensor* bias_t, int64_t channels, int64_t outputs) {
    const Tensor &in = c.in[0], &w = c.in[1], &y = c.out[0];
    const QuantParams &pi = in.qparams(), &pw = w.qparams();
    bool quantized_out = y.is_quantized();
    residual = c.attrs.residual;
    relu = c.attrs.relu;
    gelu = c.attrs.gelu;
    double so = quantized_out ? y.qparams().scales[0] : 1.0, sr = 1.0;
    if (residual && c.in.back().is_quantized()) {
      const Tensor& r = c.in.back();
      sr = r.qparams().scales[0];
      residual_zero = static_cast<float>(r.qparams().zero_points[0]);
      residual_dt = r.dtype() == DType::kQUInt8 ? memory::data_type::u8 : memory::data_type::s8;
    }
    // GELU is not linear: it sees real values, and the output scale comes after it
    // (the chain's one eltwise_linear, as with a residual).
    if (gelu) sr = 1.0;
    inv_out_scale = static_cast<float>(sr / so);
    // Both loops below run on every call, on the thread between oneDNN's
    // primitives (ResNet-50: 27,560 channels a forward): plain loops over raw
    // pointers, which vectorize (reading the bias through Tensor::data each
    // channel made this constructor 1.7% of the batch-1 int8 forward at 2 threads).
    const double s_in = pi.scales[0], to_out = residual || gelu ? sr : so;
    const double* s_w = pw.scales.data();
    scales.resize(channels);
    for (int64_t ch = 0; ch < channels; ++ch) scales[ch] = static_cast<float>(s_in * s_w[ch] / to_out);
    // The residual's zero point goes into the bias, in real units - s_r z_r: oneDNN
    // 2.6 gives two eltwise_linear post-ops in one chain the first one's
    // coefficients, so there is room for only one (the final rescale).
    if (bias_t || residual_zero != 0) {
      bias.resize(outputs);
      const float* b_in = bias_t ? bias_t->data<float>() : nullptr;
      const double shift = sr * residual_zero;
      const int64_t w_step = channels == 1 ? 0 : 1;
      for (int64_t ch = 0; ch < outputs; ++ch) {
        const double b = (b_in ? static_cast<double>(b_in[ch]) : 0.0) - shift;
        bias[ch] = static_cast<float>(b / (s_in * s_w[ch * w_step]));
      }
    }
    zero_in = static_cast<int32_t>(pi.zero_points[0]);
    zero_out = quantized_out ? static_cast<int32_t>(y.qparams().zero_points[0]) : 0;
    if (quantized_out && (y.qparams().quant_min != 0 || y.qparams().quant_max != 0)) {
      clip = true;
      clip_lo = static_cast<float>(y.qparams().quant_min - zero_out);
      clip_hi = static_cast<float>(y.qparams().quant_max - zero_out);
    }
    src_dt = in.dtype() == DType::kQUInt8 ? memory::data_type::u8 : memory::data_type::s8;
    dst_dt = !quantized_out ? memory::data_type::f32
             : y.dtype() == DType::kQUInt8 ? memory::data_type::u8 : memory::data_type::s8;
  }

  // Output scales, run-time zero points and post-ops; residual_md: the layout the
  // residual is read in. Note [Run-time output scales]: the output scales hold
  // the input's scale, which dynamic quantization changes every batch; baked
  // into the primitive, each batch would JIT a new one (and the cache would
  // grow without bound). A matmul whose caller says so
  // (IntegerPostOps::varying_input_scale) takes them at execution instead;
  // otherwise they stay in the primitive, which runs 1-3% faster (BERT-base).
  dnnl::primitive_attr Attr(bool per_channel, const memory::desc& residual_md, bool runtime_scales = false) const {
    dnnl::primitive_attr attr;
    if (runtime_scales) {
      attr.set_output_scales(per_channel ? 1 << 1 : 0, {DNNL_RUNTIME_F32_VAL});
    } else {
      attr.set_output_scales(per_channel ? 1 << 1 : 0, scales);
    }
    if (zero_in != 0) attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
    if (zero_out != 0) attr.set_zero_points(DNNL_ARG_DST, 0, {DNNL_RUNTIME_S32_VAL});
    dnnl::post_ops ops;
    if (correction) ops.append_binary(dnnl::algorithm::binary_add, correction_md);
    if (residual) ops.append_binary(dnnl::algorithm::binary_add, residual_md);
    if (relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    if (gelu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_gelu_erf, 0.f, 0.f);
    if ((residual || gelu) && inv_out_scale != 1.f) {
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, inv_out_scale, 0.f);
    }
    if (clip) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, clip_lo, clip_hi);
    attr.set_post_ops(ops);
    return attr;
  }

  std::string Key(bool runtime_scales = false) const {
    return absl::StrCat(static_cast<int>(src_dt), "|", static_cast<int>(dst_dt), "|", zero_in != 0, "|", zero_out != 0,
                        "|", residual, relu, gelu, clip, correction, "|", static_cast<int>(residual_dt), "|", residual_zero, "|",
                        inv_out_scale, "|", clip_lo, ",", clip_hi, "|", scales.size(), "|",
                        runtime_scales ? 0
                                       : std::hash<std::string_view>{}(std::string_view(
                                             reinterpret_cast<const char*>(scales.data()), scales.size() * sizeof(float))));
  }

  // The epilogue of the high half of split weights: the same output scales (so
  // its result is in this epilogue's units), nothing else, into f32.
  IntegerEpilogue HighHalf() const {
    IntegerEpilogue h = *this;
    h.bias.clear();
    h.residual = h.relu = h.gelu = h.clip = h.correction = false;
    h.zero_out = 0;
    h.residual_zero = 0;
    h.inv_out_scale = 1;
    h.dst_dt = memory::data_type::f32;
    return h;
  }

  // The run-time arguments every integer primitive takes besides its operands.
  void AddArgs(std::unordered_map<int, memory>& args, int32_t* zin, int32_t* zout) const {
    memory::desc zp_md({1}, memory::data_type::s32, memory::format_tag::x);
    if (zero_in != 0) args.emplace(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, memory(zp_md, Engine(), zin));
    if (zero_out != 0) args.emplace(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, memory(zp_md, Engine(), zout));
  }
};

// The binary post-ops' operands: the correction (when there is one) comes first.
constexpr int PostOpArg(int index) { return DNNL_ARG_ATTR_MULTIPLE_POST_OP(index) | DNNL_ARG_SRC_1; }

// A tensor's own layout as a oneDNN descriptor (its strides).
memory::desc Plain(const Tensor& t, memory::data_type dt) { return memory::desc(Dims(t.shape()), dt, FixUnitStrides(t)); }

const Tensor* IntegerBias(const KernelCall& c) {
  return c.in.size() > 2u + (c.attrs.residual ? 1 : 0) ? &c.in[2] : nullptr;
}

// Runs an integer primitive: weights from the weight cache, the epilogue's bias
// and run-time zero points, src and dst (and the residual, read in `residual_plain`
// as `residual_want`) through their layouts.
void RunInteger(const char* op, const CachedConv& entry, const IntegerEpilogue& e, const Tensor& w,
                const memory::desc& w_plain, const memory::desc& bias_md, const Arg& src, const Arg& dst,
                const memory::desc& residual_plain, const memory::desc& residual_want, const Tensor* residual,
                bool runtime_scales = false, const memory* correction = nullptr) {
  int32_t zin = e.zero_in, zout = e.zero_out;
  QUANTA_ONEDNN(op, {
    dnnl::stream stream(Engine());
    std::unordered_map<int, memory> args = {{DNNL_ARG_WEIGHTS, WeightsFor(w, w_plain, entry.want[1], stream)}};
    if (!e.bias.empty()) args.emplace(DNNL_ARG_BIAS, memory(bias_md, Engine(), const_cast<float*>(e.bias.data())));
    if (runtime_scales) {  // Note [Run-time output scales]
      memory::desc scales_md({static_cast<int64_t>(e.scales.size())}, memory::data_type::f32, memory::format_tag::x);
      args.emplace(DNNL_ARG_ATTR_OUTPUT_SCALES, memory(scales_md, Engine(), const_cast<float*>(e.scales.data())));
    }
    e.AddArgs(args, &zin, &zout);
    if (correction) args.emplace(PostOpArg(0), *correction);
    std::vector<Arg> layout = {src, dst};
    if (residual) {
      layout.push_back({PostOpArg(correction ? 1 : 0), residual_plain, residual_want, residual->raw_data(), true});
    }
    ExecuteWith(entry.prim, std::move(args), layout, stream);
  });
}

// Note [int8 convolution implementations]
// oneDNN lists several JIT implementations for most int8 convolutions (with
// AVX-512 VNNI: brgconv and jit_int8, or their 1x1 forms) and builds the first
// it lists, brgconv, which is not the fastest everywhere. Measured with oneDNN
// 2.6 on a Zen 4 EPYC, each implementation forced in turn
// (`bench_infer --profile=int8 --int8_implementation=first|jit_int8`,
// ONEDNN_VERBOSE's median time of every layer, 1 thread):
// - ResNet-20's 3x3 layers of 16 to 64 input channels run 8-28% faster with
//   jit_int8, at batch 64 and at batch 1 (the whole batch-64 int8 model:
//   14.3 -> 13.4 ms at 1 thread, 7.5 -> 7.0 ms at 2);
// - ResNet-50's 3x3 layers at batch 1 run as fast with either at 64 and 128
//   input channels and 8-29% faster with brgconv at 256 and 512; its 1x1
//   layers 0-13% faster with brgconv_1x1 than jit_int8_1x1.
// So a convolution with a kernel larger than 1x1 and at most 64 input channels
// a group takes jit_int8 where oneDNN offers it, and a 1x1 convolution of one
// image on two or more threads jit_int8_1x1; every other one oneDNN's first.
// The 1x1 exception was measured on 2026-12-08 (same machine, ResNet-50 batch
// 1, ONEDNN_VERBOSE's per-layer medians of 40 forwards, the two implementations
// alternated): at 2 threads jit_int8_1x1 was as fast or faster than
// brgconv_1x1 on all of the network's 1x1 shapes in two rounds (by 0-12%), and
// in three more rounds of the old rule against the new one its 1x1 layers ran
// 1.3%, 3.5% and 5.0% faster (geometric means over the shapes) after dividing
// by the unchanged 3x3 layers' ratio of the same round (the host's noise). At 1 thread the same run found jit_int8_1x1 between
// 3% slower and 15% faster, not the lead for brgconv_1x1 above, so one thread
// keeps oneDNN's first; larger batches were not measured and keep it too.
// A fixed rule, like Note [Winograd convolutions]'s, rather than timing
// each shape at run time: tried, timing on scratch buffers picked jit_int8 for
// ResNet-50's 256-channel layers, faster with the weights in cache but slower
// in the network, which streams them from memory.
// The candidates are the implementations for the ISA of oneDNN's first, not
// the reference ones: on a VNNI CPU oneDNN also offers its AVX2 and SSE4.1
// int8 kernels, which saturate int16 pairs (Note [Exact integers without
// VNNI]; onednn_test caught them giving other bits). Among the candidates the
// choice cannot change a result: each accumulates the same integers exactly in
// int32 and applies the same f32 epilogue, and tests/backends:onednn_test holds
// every candidate's output bit-equal to the chosen one's (u8 and f32 outputs,
// u8, f32 or no residual, u8 and s8 sources). SetOption("int8_implementation",
// v): "rule" (the default), "first" (oneDNN's own choice) or a candidate's name
// prefix ("brgconv": that one where oneDNN offers it, else the first), for
// tests and benchmarks.
std::mutex int8_choice_mu;
std::string int8_choice_mode = "rule";  // guarded by int8_choice_mu
Int8Choice last_int8_choice;            // guarded by int8_choice_mu
std::atomic<size_t> rule_int8_choices{0};

std::string Int8ChoiceMode() {
  std::lock_guard<std::mutex> lock(int8_choice_mu);
  return int8_choice_mode;
}

// The int8 convolution primitive for pd's problem that Note [int8 convolution
// implementations] picks; `rule_choice`: the rule's name prefix for the problem
// ("jit_int8:", "jit_int8_1x1:" or "first").
std::shared_ptr<CachedConv> PickInt8Convolution(dnnl::convolution_forward::primitive_desc pd,
                                                const std::string& rule_choice, const std::string& mode) {
  std::string want = mode;
  if (mode == "rule") want = rule_choice;
  Int8Choice choice;
  std::optional<dnnl::convolution_forward::primitive_desc> first, chosen;
  auto isa = [](std::string_view impl) { return impl.substr(std::min(impl.find(':'), impl.size())); };
  do {
    const std::string impl = pd.impl_info_str();
    if (!first) first = pd;
    // Candidates: those for the ISA of oneDNN's first, not the reference ones
    // nor those for an older ISA (on a VNNI CPU, jit_uni_int8:avx2 would
    // saturate int16 pairs: Note [Exact integers without VNNI]).
    if (impl.rfind("ref", 0) == 0 || isa(impl) != isa(first->impl_info_str())) continue;
    choice.candidates.push_back(impl);
    if (!chosen && want != "first" && impl.rfind(want, 0) == 0) chosen = pd;
  } while (pd.next_impl());
  if (!chosen) chosen = first;
  choice.chosen = chosen->impl_info_str();
  if (mode == "rule" && choice.chosen != first->impl_info_str()) rule_int8_choices.fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(int8_choice_mu);
    last_int8_choice = std::move(choice);
  }
  return std::make_shared<CachedConv>(
      CachedConv{dnnl::convolution_forward(*chosen), {chosen->src_desc(), chosen->weights_desc(), chosen->dst_desc()}});
}

// x (N, C, H, W) u8/s8, w (O, C/G, KH, KW) s8/s4 (symmetric), optional f32 bias
// (O), optional f32 residual -> y f32 or u8/s8. Activations are read and written
// channels-last (what int8 convolutions want; channels-last tensors need no
// reorder); zero points are passed at execution (oneDNN 2.6 takes them at run time).
void OneDnnQuantizedConv2d(const KernelCall& c) {
  const Tensor &x = c.in[0], &y = c.out[0];
  const Tensor* bias = IntegerBias(c);
  if (y.numel() == 0) return ReferenceKernel(c.op)(c);
  if (WithUnsignedSource(c, &OneDnnQuantizedConv2d)) return;  // Note [Exact integers without VNNI]
  std::shared_ptr<const SplitWeights> split = SplitFor(c.in[1], c.in[0]);
  const Tensor& w = split ? split->low : c.in[1];
  const QuantParams& pw = w.qparams();
  int64_t O = w.size(0);
  bool per_channel = pw.scheme == QScheme::kPerChannel;
  IntegerEpilogue e(c, bias, per_channel ? O : 1, O);
  bool has_bias = !e.bias.empty();
  const OpAttrs& at = c.attrs;
  int64_t G = at.groups;
  Dims x_dims(x.shape()), y_dims(y.shape());
  Dims w_dims = G == 1 ? Dims(w.shape()) : Dims{G, O / G, w.size(1), w.size(2), w.size(3)};
  Dims strides = {at.stride[0], at.stride[1]}, dilates = {at.dilation[0] - 1, at.dilation[1] - 1},
       padding = {at.padding[0], at.padding[1]};
  memory::desc x_want(x_dims, e.src_dt, memory::format_tag::nhwc), y_want(y_dims, e.dst_dt, memory::format_tag::nhwc);
  memory::desc r_want(y_dims, e.residual_dt, memory::format_tag::nhwc);
  memory::desc w_plain(w_dims, memory::data_type::s8, G == 1 ? memory::format_tag::oihw : memory::format_tag::goihw);
  memory::desc b_md = has_bias ? memory::desc({O}, memory::data_type::f32, memory::format_tag::x) : memory::desc();
  const std::string mode = Int8ChoiceMode();
  // Note [int8 convolution implementations]; the thread count is part of the primitive's key.
  const bool small_spatial = (w.size(2) > 1 || w.size(3) > 1) && w.size(1) <= 64;
  const bool one_image_1x1 = w.size(2) == 1 && w.size(3) == 1 && x.size(0) == 1 && GetNumThreads() > 1;
  const std::string rule_choice = small_spatial ? "jit_int8:" : one_image_1x1 ? "jit_int8_1x1:" : "first";
  auto primitive = [&](const IntegerEpilogue& ep, const memory::desc& dst, const memory::desc& bias_md) {
    std::string key = absl::StrCat("qconv|", mode, "|", GetNumThreads(), "|", ep.Key(), "|", absl::StrJoin(x_dims, ","), "|",
                                   absl::StrJoin(w_dims, ","), "|", !bias_md.is_zero(), "|", absl::StrJoin(strides, ","),
                                   "|", absl::StrJoin(dilates, ","), "|", absl::StrJoin(padding, ","));
    return ConvPrimitive("quantized_conv2d", key, [&] {
      dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                           x_want, memory::desc(w_dims, memory::data_type::s8, memory::format_tag::any),
                                           bias_md, dst, strides, dilates, padding, padding);
      return PickInt8Convolution(
          dnnl::convolution_forward::primitive_desc(desc, ep.Attr(per_channel, r_want), Engine()), rule_choice, mode);
    });
  };
  Arg src{DNNL_ARG_SRC, Plain(x, e.src_dt), x_want, x.raw_data(), true};
  memory high;  // Note [Exact integers without VNNI]: the high half's products
  if (split) {
    e.correction = true;
    e.correction_md = memory::desc(y_dims, memory::data_type::f32, memory::format_tag::nhwc);
    IntegerEpilogue h = e.HighHalf();
    auto entry = primitive(h, e.correction_md, memory::desc());
    if (!entry) return Fallback(c, "oneDNN has no primitive for the high half of its weights");
    high = memory(e.correction_md, Engine());
    src.want = entry->want[0];
    RunInteger("quantized_conv2d", *entry, h, split->high, w_plain, memory::desc(), src,
               {DNNL_ARG_DST, e.correction_md, entry->want[2], high.get_data_handle(), false}, memory::desc(), r_want,
               nullptr);
  }
  auto entry = primitive(e, y_want, b_md);
  if (!entry) return Fallback(c, "oneDNN has no primitive for it");
  const Tensor* residual = e.residual ? &c.in.back() : nullptr;
  src.want = entry->want[0];
  RunInteger("quantized_conv2d", *entry, e, w, w_plain, b_md, src,
             {DNNL_ARG_DST, Plain(y, e.dst_dt), entry->want[2], y.raw_data(), false},
             residual ? Plain(*residual, e.residual_dt) : memory::desc(), r_want, residual, false,
             split ? &high : nullptr);
}

// a (M, K) u8/s8, b (K, N) s8/s4 with zero points 0 (symmetric weights), optional
// f32 bias (N), optional residual (M, N) -> y (M, N) f32 or u8/s8; scales, bias and
// post-ops as in IntegerEpilogue.
void OneDnnQuantizedMatmul(const KernelCall& c) {
  const Tensor &a = c.in[0], &y = c.out[0];
  const Tensor* bias = IntegerBias(c);
  const QuantParams& pb = c.in[1].qparams();
  bool supported = std::all_of(pb.zero_points.begin(), pb.zero_points.end(), [](int64_t z) { return z == 0; });
  if (y.numel() == 0) return ReferenceKernel(c.op)(c);
  if (!supported) return Fallback(c, "weights with nonzero zero points");
  if (WithUnsignedSource(c, &OneDnnQuantizedMatmul)) return;  // Note [Exact integers without VNNI]
  std::shared_ptr<const SplitWeights> split = SplitFor(c.in[1], c.in[0]);
  const Tensor& b = split ? split->low : c.in[1];
  int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  bool per_channel = pb.scheme == QScheme::kPerChannel;
  IntegerEpilogue e(c, bias, per_channel ? N : 1, N);
  bool has_bias = !e.bias.empty();
  memory::desc a_md({M, K}, e.src_dt, memory::format_tag::ab), b_md({K, N}, memory::data_type::s8, memory::format_tag::ab),
      y_md({M, N}, e.dst_dt, memory::format_tag::ab), bias_md({1, N}, memory::data_type::f32, memory::format_tag::ab),
      r_md({M, N}, e.residual_dt, memory::format_tag::ab);
  // Note [Packed matmul weights]: a converted model's weights (constant
  // storage) go to the primitive in the layout it picks, reordered once into
  // the weight cache (Note [Weight cache]); given plain, oneDNN's brgemm matmul
  // packs them again inside every call (BERT-base int8 at batch 1, 1 thread on
  // a Zen 4: its GEMMs 60.8 -> 55.8 ms a forward, docs/benchmarks.md). The
  // cache holds the packed copy beside the model's own, as for convolutions:
  // the process keeps the int8 weights twice (BERT-base: 85 MB more).
  const bool packed = b.storage()->constant();
  const memory::desc b_prim = packed ? memory::desc({K, N}, memory::data_type::s8, memory::format_tag::any) : b_md;
  const bool runtime_scales = c.attrs.varying_input_scale;  // Note [Run-time output scales]
  auto primitive = [&](const IntegerEpilogue& ep, const memory::desc& dst, bool with_bias) {
    std::string key = absl::StrCat("qmatmul|", GetNumThreads(), "|", ep.Key(runtime_scales), "|", M, ",", K, ",", N,
                                   "|", with_bias, "|", packed);
    return ConvPrimitive("quantized_matmul", key, [&] {
      dnnl::matmul::desc desc =
          with_bias ? dnnl::matmul::desc(a_md, b_prim, bias_md, dst) : dnnl::matmul::desc(a_md, b_prim, dst);
      auto pd = dnnl::matmul::primitive_desc(desc, ep.Attr(per_channel, r_md, runtime_scales), Engine());
      if (packed && pd.weights_desc() != b_md) ++packed_matmul_primitives;
      return std::make_shared<CachedConv>(CachedConv{dnnl::matmul(pd), {pd.src_desc(), pd.weights_desc(), pd.dst_desc()}});
    });
  };
  memory high;  // Note [Exact integers without VNNI]: the high half's products
  if (split) {
    e.correction = true;
    e.correction_md = memory::desc({M, N}, memory::data_type::f32, memory::format_tag::ab);
    IntegerEpilogue h = e.HighHalf();
    auto entry = primitive(h, e.correction_md, false);
    if (!entry) return Fallback(c, "oneDNN has no primitive for the high half of its weights");
    high = memory(e.correction_md, Engine());
    RunInteger("quantized_matmul", *entry, h, split->high, b_md, bias_md, {DNNL_ARG_SRC, a_md, entry->want[0], a.raw_data(), true},
               {DNNL_ARG_DST, e.correction_md, entry->want[2], high.get_data_handle(), false}, r_md, r_md, nullptr,
               runtime_scales);
  }
  auto entry = primitive(e, y_md, has_bias);
  if (!entry) return Fallback(c, "oneDNN has no primitive for it");
  const Tensor* residual = e.residual ? &c.in.back() : nullptr;
  RunInteger("quantized_matmul", *entry, e, b, b_md, bias_md, {DNNL_ARG_SRC, a_md, entry->want[0], a.raw_data(), true},
             {DNNL_ARG_DST, y_md, entry->want[2], y.raw_data(), false}, r_md, r_md, residual, runtime_scales,
             split ? &high : nullptr);
}

void OneDnnForget(const void* data) {
  WeightCache& cache = GetWeightCache();
  std::shared_ptr<const SplitWeights> split;  // freed after the lock: its halves' storage calls back here
  std::lock_guard<std::mutex> lock(cache.mu);
  cache.entries.erase(data);
  if (auto it = cache.splits.find(data); it != cache.splits.end()) {
    split = std::move(it->second);
    cache.splits.erase(it);
  }
}

void OneDnnSetNumThreads(int n) { omp_set_num_threads(n); }

void OneDnnSetWinograd(bool on) { winograd_enabled = on; }

void OneDnnSetInt8Implementation(const std::string& mode) {
  std::lock_guard<std::mutex> lock(int8_choice_mu);
  int8_choice_mode = mode;
}

size_t OneDnnRuleInt8Choices() { return rule_int8_choices.load(std::memory_order_relaxed); }

Int8Choice OneDnnLastInt8Choice() {
  std::lock_guard<std::mutex> lock(int8_choice_mu);
  return last_int8_choice;
}

// oneDNN 2.6's bf16 and Winograd kernels both start at AVX-512 (core).
static bool HasAvx512Core() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::avx512_core:
    case dnnl::cpu_isa::avx512_core_vnni:
    case dnnl::cpu_isa::avx512_core_bf16:
    case dnnl::cpu_isa::avx512_core_amx:
      return true;
    default:
      return false;
  }
}

bool OneDnnHasBf16Kernels() { return HasAvx512Core(); }

bool OneDnnHasVnni() { return HasVnni(); }

size_t OneDnnSplitWeightCalls() { return split_calls.load(std::memory_order_relaxed); }

size_t OneDnnPackedMatmulPrimitives() { return static_cast<size_t>(packed_matmul_primitives.load()); }

size_t OneDnnWinogradPrimitives() { return static_cast<size_t>(winograd_primitives.load()); }

std::string DescribeConvolutions(size_t winograd_primitives_before) {
  if (!winograd_enabled.load(std::memory_order_relaxed)) return "direct (Winograd turned off)";
  const size_t built = OneDnnWinogradPrimitives() - winograd_primitives_before;
  if (built == 0) {
    return HasAvx512Core() ? "direct (no Winograd primitive built since the reading: no 3x3 layer of 32+ channels)"
                           : "direct (oneDNN built no Winograd primitive: it has Winograd kernels only with AVX-512)";
  }
  return absl::StrCat("Winograd for the 3x3 layers of 32+ channels (", built,
                      " Winograd primitives built), direct for the others");
}

size_t OneDnnCachedPrimitives() {
  Cache& cache = GetCache();
  std::lock_guard<std::mutex> lock(cache.mu);
  return cache.matmuls.size() + cache.convs.size();
}

}  // namespace quanta::cpu

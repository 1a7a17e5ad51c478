// oneDNN 2.6 (v2 API: op::desc, then primitive_desc(desc, attr, engine)).
// Every oneDNN call runs inside QUANTA_ONEDNN, which turns dnnl::error into
// quanta::Error naming the op, file and line.
#include "backends/cpu/onednn.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "backends/cpu/reference_kernels.h"
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

}  // namespace

void OneDnnMatmul(const KernelCall& c) {
  memory::data_type dt;
  if (!ToOneDnn(c.in[0].dtype(), &dt) || c.out[0].numel() == 0 || c.in[0].size(-1) == 0) {
    ReferenceKernel(c.op)(c);
    return;
  }
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
  if (!prim) {  // e.g. f16 without AVX512-FP16: oneDNN has no kernel here
    ReferenceKernel(c.op)(c);
    return;
  }
  QUANTA_ONEDNN("matmul", {
    dnnl::stream stream(Engine());
    memory a_mem(a_md, Engine(), a.raw_data()), b_mem(b_md, Engine(), b.raw_data()),
        y_mem(y_md, Engine(), y.raw_data());
    prim.execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, y_mem}});
    stream.wait();
  });
}

namespace {

// What every convolution primitive (forward and both backwards) shares: the
// problem's descriptors in Quanta's plain layouts and in "any" layout.
struct ConvProblem {
  memory::data_type dt;
  Dims x_dims, w_dims, y_dims, strides, dilates, padding;
  int64_t groups, out_channels;
  bool bias;

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
                        absl::StrJoin(dilates, ","), "|", absl::StrJoin(padding, ","));
  }
  memory::desc XPlain() const { return memory::desc(x_dims, dt, memory::format_tag::nchw); }
  memory::desc WPlain() const {
    return memory::desc(w_dims, dt, groups == 1 ? memory::format_tag::oihw : memory::format_tag::goihw);
  }
  memory::desc YPlain() const { return memory::desc(y_dims, dt, memory::format_tag::nchw); }
  memory::desc BiasDesc() const {
    return bias ? memory::desc({out_channels}, dt, memory::format_tag::x) : memory::desc();
  }
  memory::desc Any(const Dims& d) const { return memory::desc(d, dt, memory::format_tag::any); }
  dnnl::convolution_forward::primitive_desc Forward() const {
    dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                         Any(x_dims), Any(w_dims), BiasDesc(), Any(y_dims), strides, dilates,
                                         padding, padding);
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

void Execute(const dnnl::primitive& prim, const std::vector<Arg>& args) {
  dnnl::stream stream(Engine());
  std::unordered_map<int, memory> bound;
  std::vector<std::pair<memory, memory>> outputs;  // (primitive's, user's)
  for (const Arg& a : args) {
    memory user(a.plain, Engine(), a.data);
    if (a.plain == a.want) {
      bound.emplace(a.id, user);
      continue;
    }
    memory tmp(a.want, Engine());
    if (a.input) {
      dnnl::reorder(user, tmp).execute(stream, user, tmp);
    } else {
      outputs.emplace_back(tmp, user);
    }
    bound.emplace(a.id, tmp);
  }
  prim.execute(stream, bound);
  for (auto& [from, to] : outputs) dnnl::reorder(from, to).execute(stream, from, to);
  stream.wait();
}

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

bool ConvDtype(const KernelCall& c, memory::data_type* dt) {
  return ToOneDnn(c.in[0].dtype(), dt) && c.out[0].numel() > 0 && c.in[0].numel() > 0 && c.in[1].numel() > 0;
}

}  // namespace

// x (N, C, H, W), w (O, C/G, KH, KW), optional bias (O): contiguous. y (N, O, OH, OW).
void OneDnnConv2d(const KernelCall& c) {
  memory::data_type dt;
  if (!ConvDtype(c, &dt)) return ReferenceKernel(c.op)(c);
  const Tensor &x = c.in[0], &w = c.in[1], &y = c.out[0];
  const Tensor* bias = c.in.size() > 2 ? &c.in[2] : nullptr;
  ConvProblem p(x.shape(), w.shape(), y.shape(), c.attrs, bias != nullptr, dt);
  auto entry = ConvPrimitive("conv2d", p.Key("conv"), [&] {
    auto pd = p.Forward();
    return std::make_shared<CachedConv>(
        CachedConv{dnnl::convolution_forward(pd), {pd.src_desc(), pd.weights_desc(), pd.dst_desc()}});
  });
  if (!entry) return ReferenceKernel(c.op)(c);
  std::vector<Arg> args = {{DNNL_ARG_SRC, p.XPlain(), entry->want[0], x.raw_data(), true},
                           {DNNL_ARG_WEIGHTS, p.WPlain(), entry->want[1], w.raw_data(), true},
                           {DNNL_ARG_DST, p.YPlain(), entry->want[2], y.raw_data(), false}};
  if (bias) args.push_back({DNNL_ARG_BIAS, p.BiasDesc(), p.BiasDesc(), bias->raw_data(), true});
  QUANTA_ONEDNN("conv2d", Execute(entry->prim, args));
}

// grad_y (N, O, OH, OW), w (O, C/G, KH, KW) -> grad_x (N, C, H, W).
void OneDnnConv2dBackwardInput(const KernelCall& c) {
  memory::data_type dt;
  if (!ConvDtype(c, &dt)) return ReferenceKernel(c.op)(c);
  const Tensor &gy = c.in[0], &w = c.in[1], &gx = c.out[0];
  ConvProblem p(gx.shape(), w.shape(), gy.shape(), c.attrs, false, dt);
  auto entry = ConvPrimitive("conv2d_backward_input", p.Key("conv_bwd_data"), [&] {
    dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, p.Any(p.x_dims),
                                               p.Any(p.w_dims), p.Any(p.y_dims), p.strides, p.dilates, p.padding,
                                               p.padding);
    auto pd = dnnl::convolution_backward_data::primitive_desc(desc, Engine(), p.Forward());
    return std::make_shared<CachedConv>(CachedConv{dnnl::convolution_backward_data(pd),
                                                   {pd.diff_dst_desc(), pd.weights_desc(), pd.diff_src_desc()}});
  });
  if (!entry) return ReferenceKernel(c.op)(c);
  QUANTA_ONEDNN("conv2d_backward_input",
                Execute(entry->prim, {{DNNL_ARG_DIFF_DST, p.YPlain(), entry->want[0], gy.raw_data(), true},
                                      {DNNL_ARG_WEIGHTS, p.WPlain(), entry->want[1], w.raw_data(), true},
                                      {DNNL_ARG_DIFF_SRC, p.XPlain(), entry->want[2], gx.raw_data(), false}}));
}

// grad_y (N, O, OH, OW), x (N, C, H, W) -> grad_w (O, C/G, KH, KW).
void OneDnnConv2dBackwardWeight(const KernelCall& c) {
  memory::data_type dt;
  if (!ConvDtype(c, &dt)) return ReferenceKernel(c.op)(c);
  const Tensor &gy = c.in[0], &x = c.in[1], &gw = c.out[0];
  ConvProblem p(x.shape(), gw.shape(), gy.shape(), c.attrs, false, dt);
  auto entry = ConvPrimitive("conv2d_backward_weight", p.Key("conv_bwd_weights"), [&] {
    dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct, p.Any(p.x_dims),
                                                  p.Any(p.w_dims), p.Any(p.y_dims), p.strides, p.dilates,
                                                  p.padding, p.padding);
    auto pd = dnnl::convolution_backward_weights::primitive_desc(desc, Engine(), p.Forward());
    return std::make_shared<CachedConv>(CachedConv{dnnl::convolution_backward_weights(pd),
                                                   {pd.diff_dst_desc(), pd.src_desc(), pd.diff_weights_desc()}});
  });
  if (!entry) return ReferenceKernel(c.op)(c);
  QUANTA_ONEDNN("conv2d_backward_weight",
                Execute(entry->prim, {{DNNL_ARG_DIFF_DST, p.YPlain(), entry->want[0], gy.raw_data(), true},
                                      {DNNL_ARG_SRC, p.XPlain(), entry->want[1], x.raw_data(), true},
                                      {DNNL_ARG_DIFF_WEIGHTS, p.WPlain(), entry->want[2], gw.raw_data(), false}}));
}

// What oneDNN's int8 primitives need from Quanta's parameters, for input `in`,
// symmetric weights `w` with `channels` scales (1 or one per output channel),
// optional f32 bias and output y: output scales s_in s_w[c] / s_out, the bias
// as bias[c] / (s_in s_w[c]) (oneDNN adds it to the i32 accumulator before
// scaling), zero points and data types.
struct IntegerEpilogue {
  std::vector<float> scales, bias;
  int32_t zero_in, zero_out;
  memory::data_type src_dt, dst_dt;

  IntegerEpilogue(const Tensor& in, const Tensor& w, const Tensor* bias_t, const Tensor& y, int64_t channels) {
    const QuantParams &pi = in.qparams(), &pw = w.qparams();
    bool quantized_out = y.is_quantized();
    double so = quantized_out ? y.qparams().scales[0] : 1.0;
    scales.resize(channels);
    for (int64_t c = 0; c < channels; ++c) scales[c] = static_cast<float>(pi.scales[0] * pw.scales[c] / so);
    if (bias_t) {
      int64_t n = bias_t->numel();
      bias.resize(n);
      for (int64_t c = 0; c < n; ++c) {
        bias[c] = static_cast<float>(bias_t->data<float>()[c] / (pi.scales[0] * pw.scales[channels == 1 ? 0 : c]));
      }
    }
    zero_in = static_cast<int32_t>(pi.zero_points[0]);
    zero_out = quantized_out ? static_cast<int32_t>(y.qparams().zero_points[0]) : 0;
    src_dt = in.dtype() == DType::kQUInt8 ? memory::data_type::u8 : memory::data_type::s8;
    dst_dt = !quantized_out ? memory::data_type::f32
             : y.dtype() == DType::kQUInt8 ? memory::data_type::u8 : memory::data_type::s8;
  }
};

// x (N, C, H, W) u8/s8, w (O, C/G, KH, KW) s8 (symmetric), optional f32 bias (O)
// -> y f32 or u8/s8; scales and bias as in OneDnnQuantizedMatmul, zero points of
// the input and output passed at execution (oneDNN 2.6 takes them at run time).
void OneDnnQuantizedConv2d(const KernelCall& c) {
  const Tensor &x = c.in[0], &w = c.in[1], &y = c.out[0];
  const Tensor* bias = c.in.size() > 2 ? &c.in[2] : nullptr;
  const QuantParams& pw = w.qparams();
  bool quantized_out = y.is_quantized();
  if ((quantized_out && (y.qparams().quant_min != 0 || y.qparams().quant_max != 0)) || y.numel() == 0) {
    return ReferenceKernel(c.op)(c);
  }
  int64_t O = w.size(0);
  bool per_channel = pw.scheme == QScheme::kPerChannel;
  IntegerEpilogue e(x, w, bias, y, per_channel ? O : 1);
  std::vector<float>& scales = e.scales;
  std::vector<float>& bias_adjusted = e.bias;
  int32_t zx = e.zero_in, zo = e.zero_out;
  memory::data_type src_dt = e.src_dt, dst_dt = e.dst_dt;
  const OpAttrs& at = c.attrs;
  int64_t G = at.groups;
  Dims x_dims(x.shape()), y_dims(y.shape());
  Dims w_dims = G == 1 ? Dims(w.shape()) : Dims{G, O / G, w.size(1), w.size(2), w.size(3)};
  Dims strides = {at.stride[0], at.stride[1]}, dilates = {at.dilation[0] - 1, at.dilation[1] - 1},
       padding = {at.padding[0], at.padding[1]};
  memory::desc x_plain(x_dims, src_dt, memory::format_tag::nchw);
  memory::desc w_plain(w_dims, memory::data_type::s8, G == 1 ? memory::format_tag::oihw : memory::format_tag::goihw);
  memory::desc y_plain(y_dims, dst_dt, memory::format_tag::nchw);
  memory::desc b_md = bias ? memory::desc({O}, memory::data_type::f32, memory::format_tag::x) : memory::desc();
  memory::desc zp_md({1}, memory::data_type::s32, memory::format_tag::x);
  std::string key = absl::StrCat("qconv|", GetNumThreads(), "|", static_cast<int>(src_dt), "|", static_cast<int>(dst_dt), "|",
                                 absl::StrJoin(x_dims, ","), "|", absl::StrJoin(w_dims, ","), "|", bias != nullptr, "|",
                                 absl::StrJoin(strides, ","), "|", absl::StrJoin(dilates, ","), "|",
                                 absl::StrJoin(padding, ","), "|", zx != 0, "|", zo != 0, "|", scales.size(), "|",
                                 std::hash<std::string_view>{}(std::string_view(
                                     reinterpret_cast<const char*>(scales.data()), scales.size() * sizeof(float))));
  auto entry = ConvPrimitive("quantized_conv2d", key, [&] {
    dnnl::primitive_attr attr;
    attr.set_output_scales(per_channel ? 1 << 1 : 0, scales);
    if (zx != 0) attr.set_zero_points(DNNL_ARG_SRC, 0, {DNNL_RUNTIME_S32_VAL});
    if (zo != 0) attr.set_zero_points(DNNL_ARG_DST, 0, {DNNL_RUNTIME_S32_VAL});
    dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
        memory::desc(x_dims, src_dt, memory::format_tag::any), memory::desc(w_dims, memory::data_type::s8, memory::format_tag::any),
        b_md, memory::desc(y_dims, dst_dt, memory::format_tag::any), strides, dilates, padding, padding);
    auto pd = dnnl::convolution_forward::primitive_desc(desc, attr, Engine());
    return std::make_shared<CachedConv>(
        CachedConv{dnnl::convolution_forward(pd), {pd.src_desc(), pd.weights_desc(), pd.dst_desc()}});
  });
  if (!entry) return ReferenceKernel(c.op)(c);
  std::vector<Arg> args = {{DNNL_ARG_SRC, x_plain, entry->want[0], x.raw_data(), true},
                           {DNNL_ARG_WEIGHTS, w_plain, entry->want[1], w.raw_data(), true},
                           {DNNL_ARG_DST, y_plain, entry->want[2], y.raw_data(), false}};
  if (bias) args.push_back({DNNL_ARG_BIAS, b_md, b_md, bias_adjusted.data(), true});
  if (zx != 0) args.push_back({DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, zp_md, zp_md, &zx, true});
  if (zo != 0) args.push_back({DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, zp_md, zp_md, &zo, true});
  QUANTA_ONEDNN("quantized_conv2d", Execute(entry->prim, args));
}

// a (M, K) u8/s8, b (K, N) s8 with zero points 0 (symmetric weights), optional
// f32 bias (N) -> y (M, N) f32 or u8/s8. oneDNN scales the i32 accumulator once:
// dst = output_scale[n] * (acc + bias'[n]) (+ dst zero point), so the bias goes
// in as bias[n] / (sa sb[n]) and output_scale[n] = sa sb[n] / so.
void OneDnnQuantizedMatmul(const KernelCall& c) {
  const Tensor &a = c.in[0], &b = c.in[1], &y = c.out[0];
  const Tensor* bias = c.in.size() > 2 ? &c.in[2] : nullptr;
  const QuantParams& pb = b.qparams();
  bool quantized_out = y.is_quantized();
  // Input ranges do not change the arithmetic; a narrowed output range would need
  // a clamp oneDNN does not do.
  bool supported = std::all_of(pb.zero_points.begin(), pb.zero_points.end(), [](int64_t z) { return z == 0; }) &&
                   (!quantized_out || (y.qparams().quant_min == 0 && y.qparams().quant_max == 0)) && y.numel() > 0;
  if (!supported) return ReferenceKernel(c.op)(c);
  int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  bool per_channel = pb.scheme == QScheme::kPerChannel;
  IntegerEpilogue e(a, b, bias, y, per_channel ? N : 1);
  std::vector<float>& scales = e.scales;
  std::vector<float>& bias_adjusted = e.bias;
  int32_t za = e.zero_in, zo = e.zero_out;
  memory::data_type src_dt = e.src_dt, dst_dt = e.dst_dt;
  std::string key = absl::StrCat("qmatmul|", GetNumThreads(), "|", static_cast<int>(src_dt), "|", static_cast<int>(dst_dt),
                                 "|", M, ",", K, ",", N, "|", bias != nullptr, "|", za, "|", zo, "|", scales.size(), "|",
                                 std::hash<std::string_view>{}(std::string_view(reinterpret_cast<const char*>(scales.data()),
                                                                                scales.size() * sizeof(float))));
  memory::desc a_md({M, K}, src_dt, memory::format_tag::ab), b_md({K, N}, memory::data_type::s8, memory::format_tag::ab),
      y_md({M, N}, dst_dt, memory::format_tag::ab), bias_md({1, N}, memory::data_type::f32, memory::format_tag::ab);
  dnnl::matmul prim;
  Cache& cache = GetCache();
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    auto it = cache.matmuls.find(key);
    if (it != cache.matmuls.end()) {
      prim = it->second;
    } else {
      QUANTA_ONEDNN("quantized_matmul", Implemented([&] {
        dnnl::primitive_attr attr;
        attr.set_output_scales(per_channel ? 1 << 1 : 0, scales);
        if (za != 0) attr.set_zero_points(DNNL_ARG_SRC, 0, {za});
        if (zo != 0) attr.set_zero_points(DNNL_ARG_DST, 0, {zo});
        dnnl::matmul::desc desc = bias ? dnnl::matmul::desc(a_md, b_md, bias_md, y_md) : dnnl::matmul::desc(a_md, b_md, y_md);
        prim = dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, Engine()));
      }));
      cache.matmuls.emplace(key, prim);
    }
  }
  if (!prim) return ReferenceKernel(c.op)(c);
  QUANTA_ONEDNN("quantized_matmul", {
    dnnl::stream stream(Engine());
    std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, memory(a_md, Engine(), a.raw_data())},
                                            {DNNL_ARG_WEIGHTS, memory(b_md, Engine(), b.raw_data())},
                                            {DNNL_ARG_DST, memory(y_md, Engine(), y.raw_data())}};
    if (bias) args.emplace(DNNL_ARG_BIAS, memory(bias_md, Engine(), bias_adjusted.data()));
    prim.execute(stream, args);
    stream.wait();
  });
}

void OneDnnSetNumThreads(int n) { omp_set_num_threads(n); }

size_t OneDnnCachedPrimitives() {
  Cache& cache = GetCache();
  std::lock_guard<std::mutex> lock(cache.mu);
  return cache.matmuls.size() + cache.convs.size();
}

}  // namespace quanta::cpu

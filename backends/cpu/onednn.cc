// oneDNN 2.6 (v2 API: op::desc, then primitive_desc(desc, attr, engine)).
// Every oneDNN call runs inside QUANTA_ONEDNN, which turns dnnl::error into
// quanta::Error naming the op, file and line.
#include "backends/cpu/onednn.h"

#include <mutex>
#include <string>
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
struct CachedConv {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward conv;
};
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

// x (N, C, H, W), w (O, C/G, KH, KW), optional bias (O): contiguous. y (N, O, OH, OW).
void OneDnnConv2d(const KernelCall& c) {
  memory::data_type dt;
  if (!ToOneDnn(c.in[0].dtype(), &dt) || c.out[0].numel() == 0 || c.in[0].size(1) == 0) {
    ReferenceKernel(c.op)(c);
    return;
  }
  const Tensor& x = c.in[0];
  const Tensor& w = c.in[1];
  const Tensor* bias = c.in.size() > 2 ? &c.in[2] : nullptr;
  const Tensor& y = c.out[0];
  const OpAttrs& at = c.attrs;
  int64_t G = at.groups;
  Dims x_dims(x.shape()), y_dims(y.shape());
  Dims w_dims = G == 1 ? Dims(w.shape())
                       : Dims{G, w.size(0) / G, w.size(1), w.size(2), w.size(3)};
  Dims strides = {at.stride[0], at.stride[1]};
  Dims dilates = {at.dilation[0] - 1, at.dilation[1] - 1};
  Dims padding = {at.padding[0], at.padding[1]};
  std::string key = absl::StrCat("conv|", GetNumThreads(), "|", static_cast<int>(dt), "|", absl::StrJoin(x_dims, ","), "|",
                                 absl::StrJoin(w_dims, ","), "|", bias != nullptr, "|",
                                 absl::StrJoin(strides, ","), "|", absl::StrJoin(dilates, ","),
                                 "|", absl::StrJoin(padding, ","));
  memory::desc x_plain(x_dims, dt, memory::format_tag::nchw);
  memory::desc w_plain(w_dims, dt, G == 1 ? memory::format_tag::oihw : memory::format_tag::goihw);
  memory::desc y_plain(y_dims, dt, memory::format_tag::nchw);
  memory::desc b_md = bias ? memory::desc({w.size(0)}, dt, memory::format_tag::x) : memory::desc();
  std::shared_ptr<CachedConv> entry;
  Cache& cache = GetCache();
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    auto it = cache.convs.find(key);
    if (it != cache.convs.end()) {
      entry = it->second;
    } else {
      QUANTA_ONEDNN("conv2d", Implemented([&] {
        // Let oneDNN pick its blocked layouts; plain tensors are reordered in and out.
        memory::desc x_any(x_dims, dt, memory::format_tag::any);
        memory::desc w_any(w_dims, dt, memory::format_tag::any);
        memory::desc y_any(y_dims, dt, memory::format_tag::any);
        dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference,
                                             dnnl::algorithm::convolution_direct, x_any, w_any,
                                             b_md, y_any, strides, dilates, padding, padding);
        auto pd = dnnl::convolution_forward::primitive_desc(desc, Engine());
        entry = std::make_shared<CachedConv>(CachedConv{pd, dnnl::convolution_forward(pd)});
      }));
      cache.convs.emplace(key, entry);  // nullptr: remembered as unsupported
    }
  }
  if (entry == nullptr) {
    ReferenceKernel(c.op)(c);
    return;
  }
  QUANTA_ONEDNN("conv2d", {
    dnnl::stream stream(Engine());
    auto bind = [&](const memory::desc& plain, const memory::desc& want, void* data, bool in) {
      memory user(plain, Engine(), data);
      if (plain == want) return user;
      memory tmp(want, Engine());
      if (in) dnnl::reorder(user, tmp).execute(stream, user, tmp);
      return tmp;
    };
    memory x_mem = bind(x_plain, entry->pd.src_desc(), x.raw_data(), true);
    memory w_mem = bind(w_plain, entry->pd.weights_desc(), w.raw_data(), true);
    memory y_user(y_plain, Engine(), y.raw_data());
    memory y_mem = y_plain == entry->pd.dst_desc() ? y_user : memory(entry->pd.dst_desc(), Engine());
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, y_mem}};
    if (bias) args.emplace(DNNL_ARG_BIAS, memory(b_md, Engine(), bias->raw_data()));
    entry->conv.execute(stream, args);
    if (y_mem != y_user) dnnl::reorder(y_mem, y_user).execute(stream, y_mem, y_user);
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

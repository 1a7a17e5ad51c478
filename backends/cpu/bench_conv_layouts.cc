// Benchmark behind issue 18's layout and algorithm decisions (not a test, not
// used by the library): one training convolution of each stage of ResNet-20
// and of fmnist_resnet8 (batch 128, 3x3, stride 1, padding 1, f32) forward,
// backward-data and backward-weights through oneDNN alone,
//   blocked:  Quanta's NCHW tensors reordered into the primitive's preferred
//             ("any", blocked) layout and back around every call;
//   nhwc:     channels-last tensors handed to the primitive as they are (the
//             CPU backend's direct convolutions);
//   winograd: Winograd F(4x4, 3x3), which takes only blocked layouts: reordered
//             as in "blocked" (Note [Winograd convolutions] in onednn.cc).
// Prints the best of 7 per pass (ms) and the implementations oneDNN chose.
// Run: OMP_NUM_THREADS=1 bazel run //backends/cpu:bench_conv_layouts
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <dnnl.hpp>

namespace {

using dnnl::memory;
using Tag = memory::format_tag;

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Layer {
  int n, c, hw;
};

// Best-of-7 milliseconds of forward, backward-data and backward-weights.
std::vector<double> Measure(const Layer& l, bool nhwc, dnnl::algorithm alg, std::string* impls) {
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const memory::dims x = {l.n, l.c, l.hw, l.hw}, w = {l.c, l.c, 3, 3}, stride = {1, 1}, dilate = {0, 0}, pad = {1, 1};
  auto desc = [](const memory::dims& d, Tag t) { return memory::desc(d, memory::data_type::f32, t); };
  const memory::desc act = desc(x, nhwc ? Tag::nhwc : Tag::any), wei = desc(w, Tag::any);
  dnnl::convolution_forward::primitive_desc fwd(
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, alg, act,
                                      wei, memory::desc(), act, stride, dilate, pad, pad),
      eng);
  dnnl::convolution_backward_data::primitive_desc bwd_d(
      dnnl::convolution_backward_data::desc(alg, act, wei, act, stride, dilate, pad,
                                            pad),
      eng, fwd);
  dnnl::convolution_backward_weights::primitive_desc bwd_w(
      dnnl::convolution_backward_weights::desc(alg, act, wei, memory::desc(), act,
                                               stride, dilate, pad, pad),
      eng, fwd);
  *impls = std::string(fwd.impl_info_str()) + " | " + bwd_d.impl_info_str() + " | " + bwd_w.impl_info_str();
  // The framework's tensors (NCHW or NHWC) and the primitives' own buffers.
  memory user_x(desc(x, nhwc ? Tag::nhwc : Tag::nchw), eng), user_y(desc(x, nhwc ? Tag::nhwc : Tag::nchw), eng);
  float* xp = static_cast<float*>(user_x.get_data_handle());
  std::fill(xp, xp + static_cast<size_t>(l.n) * l.c * l.hw * l.hw, 0.5f);
  memory fx(fwd.src_desc(), eng), fw(fwd.weights_desc(), eng), fy(fwd.dst_desc(), eng);
  memory dw(bwd_d.weights_desc(), eng), ddy(bwd_d.diff_dst_desc(), eng), ddx(bwd_d.diff_src_desc(), eng);
  memory wx(bwd_w.src_desc(), eng), wdy(bwd_w.diff_dst_desc(), eng), wdw(bwd_w.diff_weights_desc(), eng);
  auto in = [&](memory& user, memory& prim) -> memory& {
    if (!nhwc) dnnl::reorder(user, prim).execute(s, user, prim);
    return nhwc ? user : prim;
  };
  auto out = [&](memory& prim, memory& user) {
    if (!nhwc) dnnl::reorder(prim, user).execute(s, prim, user);
  };
  auto once = [&] {
    double t0 = Now();
    dnnl::convolution_forward(fwd).execute(
        s, {{DNNL_ARG_SRC, in(user_x, fx)}, {DNNL_ARG_WEIGHTS, fw}, {DNNL_ARG_DST, nhwc ? user_y : fy}});
    out(fy, user_y);
    s.wait();
    double t1 = Now();
    dnnl::convolution_backward_data(bwd_d).execute(
        s, {{DNNL_ARG_DIFF_DST, in(user_y, ddy)}, {DNNL_ARG_WEIGHTS, dw}, {DNNL_ARG_DIFF_SRC, nhwc ? user_x : ddx}});
    out(ddx, user_x);
    s.wait();
    double t2 = Now();
    memory& src = in(user_x, wx);
    dnnl::convolution_backward_weights(bwd_w).execute(
        s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, in(user_y, wdy)}, {DNNL_ARG_DIFF_WEIGHTS, wdw}});
    s.wait();
    return std::vector<double>{t1 - t0, t2 - t1, Now() - t2};
  };
  once();  // warm-up: JIT compilation
  std::vector<double> best(3, 1e9);
  for (int i = 0; i < 7; ++i) {
    std::vector<double> t = once();
    for (int k = 0; k < 3; ++k) best[k] = std::min(best[k], 1e3 * t[k]);
  }
  return best;
}

}  // namespace

int main() {
  // ResNet-20's three stages, then fmnist_resnet8's.
  for (Layer l : {Layer{128, 16, 32}, Layer{128, 32, 16}, Layer{128, 64, 8}, Layer{128, 32, 28}, Layer{128, 64, 14},
                  Layer{128, 128, 7}}) {
    for (const char* how : {"blocked", "nhwc", "winograd"}) {
      const bool nhwc = how[0] == 'n', winograd = how[0] == 'w';
      std::string impls;
      std::vector<double> t;
      try {
        t = Measure(l, nhwc, winograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct,
                    &impls);
      } catch (const dnnl::error& e) {  // e.g. Winograd without AVX-512
        std::printf("batch %d, %d channels, %dx%d, %-8s: oneDNN has no kernel (%s)\n", l.n, l.c, l.hw, l.hw, how,
                    e.what());
        continue;
      }
      std::printf("batch %d, %d channels, %dx%d, %-8s: forward %.2f ms, backward-data %.2f ms, backward-weights %.2f "
                  "ms, total %.2f ms (%s)\n",
                  l.n, l.c, l.hw, l.hw, how, t[0], t[1], t[2], t[0] + t[1] + t[2], impls.c_str());
    }
  }
  return 0;
}

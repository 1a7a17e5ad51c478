// Helpers every CPU kernel shares: typed element access by storage index (qint4
// nibbles included) and a loop over N operands of one shape with their own
// strides, split across core's thread pool. Not an op: no math here.
//
//   ForEachStrided<2>(y.shape(), {&y, &x}, [&](const std::array<int64_t, 2>& o) {
//     yp[o[0]] = xp[o[1]] + 1;   // o: storage indices of y and x
//   });
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>
#include <type_traits>

#include "core/error.h"
#include "core/parallel.h"
#include "core/tensor.h"

namespace quanta::cpu {

// The value type an element of storage type T loads as (qint4 nibbles as int8).
template <typename T> struct ElemOf { using type = T; };
template <> struct ElemOf<QInt4x2> { using type = int8_t; };
template <typename T> using Elem = typename ElemOf<T>::type;

// Element i of the storage (not of the view: add offset() and strides first).
template <typename T>
inline Elem<T> LoadAt(const void* base, int64_t i) {
  if constexpr (std::is_same_v<T, QInt4x2>) {
    return LoadQInt4(static_cast<const uint8_t*>(base), i);
  } else {
    return static_cast<const T*>(base)[i];
  }
}
template <typename T>
inline void StoreAt(void* base, int64_t i, Elem<T> v) {
  if constexpr (std::is_same_v<T, QInt4x2>) {
    StoreQInt4(static_cast<uint8_t*>(base), i, v);
  } else {
    static_cast<T*>(base)[i] = v;
  }
}

inline void* StorageBase(const Tensor& t) { return t.storage()->data(); }

// t's dims in memory order: by decreasing stride, ties in their logical order.
// Read from sizes and strides alone (a per-channel quantized tensor has no views).
inline std::vector<int64_t> MemoryOrder(const Tensor& t) {
  std::vector<int64_t> order(t.dim());
  for (int64_t d = 0; d < t.dim(); ++d) order[d] = d;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return t.stride(a) > t.stride(b); });
  return order;
}

// The loop geometry of N operands over one shape after merging dims that are
// adjacent in every operand's memory and dropping dims of size 1: (N, C, H, W)
// with a (1, C, 1, 1) operand becomes (N, C, H*W), whose innermost run is long.
template <int N>
struct LoopGeometry {
  std::vector<int64_t> sizes;
  std::vector<std::array<int64_t, N>> strides;  // per dim, per operand
  std::array<int64_t, N> offsets;

  // memory_order: visit dims in operand 0's memory order (its strides, largest
  // first) rather than the logical one, so that channels-last operands of an
  // elementwise op merge into long dense runs. Only for kernels that do not care
  // in which order elements come (of the reductions, sums and extremes, not
  // argmax, which counts them).
  LoopGeometry(const Shape& shape, const std::array<const Tensor*, N>& tensors, bool memory_order = false) {
    for (int k = 0; k < N; ++k) offsets[k] = tensors[k]->offset();
    std::vector<int64_t> order(shape.size());
    for (size_t d = 0; d < shape.size(); ++d) order[d] = static_cast<int64_t>(d);
    if (memory_order) order = MemoryOrder(*tensors[0]);
    for (int64_t d : order) {
      if (shape[d] == 1) continue;
      std::array<int64_t, N> st;
      for (int k = 0; k < N; ++k) st[k] = tensors[k]->strides()[d];
      if (!sizes.empty()) {
        bool mergeable = true;
        for (int k = 0; k < N; ++k) mergeable = mergeable && strides.back()[k] == st[k] * shape[d];
        if (mergeable) {
          sizes.back() *= shape[d];
          strides.back() = st;
          continue;
        }
      }
      sizes.push_back(shape[d]);
      strides.push_back(st);
    }
    if (sizes.empty()) {  // a single element
      sizes.push_back(1);
      strides.push_back({});
    }
  }
};

// Calls f(offsets, n, strides) for every run of the innermost (merged) dim:
// element j of the run is operand k's storage index offsets[k] + j * strides[k].
// Runs are split across the pool in chunks of at least `grain` elements. A
// kernel writes its dense case (every stride 1) and its broadcast cases (a
// stride 0) as plain loops the compiler vectorizes (Note [Dense runs]).
template <int N, typename F>
void ForEachRunStrided(const Shape& shape, const std::array<const Tensor*, N>& tensors, F&& f,
                       int64_t grain = 32768, bool serial = false, bool memory_order = false) {
  int64_t numel = NumElements(shape);
  if (numel == 0) return;
  const LoopGeometry<N> g(shape, tensors, memory_order);
  const int rank = static_cast<int>(g.sizes.size());
  const int64_t inner = g.sizes[rank - 1];
  const std::array<int64_t, N> inner_stride = g.strides[rank - 1];
  auto run = [&](int64_t begin, int64_t end) {
    // Unravel `begin` into a multi-index over the merged dims.
    std::array<int64_t, 16> idx{};
    QUANTA_CHECK(rank <= 16, "kernel: rank ", rank, " above the supported 16");
    int64_t rem = begin;
    for (int d = rank - 1; d >= 0; --d) {
      idx[d] = rem % g.sizes[d];
      rem /= g.sizes[d];
    }
    std::array<int64_t, N> off = g.offsets;
    for (int d = 0; d < rank; ++d) {
      for (int k = 0; k < N; ++k) off[k] += idx[d] * g.strides[d][k];
    }
    int64_t i = begin;
    while (i < end) {
      int64_t stop = std::min(end, i + (inner - idx[rank - 1]));
      f(off, stop - i, inner_stride);
      // Advance the multi-index past the run.
      int64_t moved = stop - i;
      i = stop;
      idx[rank - 1] += moved;
      for (int k = 0; k < N; ++k) off[k] += moved * inner_stride[k];
      for (int d = rank - 1; d > 0 && idx[d] == g.sizes[d]; --d) {
        idx[d] = 0;
        ++idx[d - 1];
        for (int k = 0; k < N; ++k) off[k] += g.strides[d - 1][k] - g.sizes[d] * g.strides[d][k];
      }
    }
  };
  if (serial) {
    run(0, numel);
  } else {
    ParallelFor(0, numel, grain, run);
  }
}

// Calls f(std::array<int64_t, N> storage_indices) for every element of `shape`,
// operand k indexed through tensors[k]'s strides and offset. The innermost
// (merged) dim runs as a tight loop; elements are split across the pool in
// chunks of at least `grain`. Pass serial=true when elements share bytes (qint4
// outputs) or the caller is itself a chunk of a parallel loop.
template <int N, typename F>
void ForEachStrided(const Shape& shape, const std::array<const Tensor*, N>& tensors, F&& f,
                    int64_t grain = 32768, bool serial = false) {
  ForEachRunStrided<N>(shape, tensors, [&](const std::array<int64_t, N>& off, int64_t n,
                                           const std::array<int64_t, N>& stride) {
    std::array<int64_t, N> o = off;
    bool unit = true;  // every operand walks the inner dim densely: the common case
    for (int k = 0; k < N; ++k) unit = unit && stride[k] == 1;
    if (unit) {
      for (int64_t j = 0; j < n; ++j) {
        f(o);
        for (int k = 0; k < N; ++k) ++o[k];
      }
    } else {
      for (int64_t j = 0; j < n; ++j) {
        f(o);
        for (int k = 0; k < N; ++k) o[k] += stride[k];
      }
    }
  }, grain, serial);
}

}  // namespace quanta::cpu

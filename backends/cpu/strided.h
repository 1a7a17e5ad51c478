// Helpers every CPU kernel shares: typed element access by storage index (qint4
// nibbles included) and a loop over N operands of one shape with their own
// strides, split across core's thread pool. Not an op: no math here.
//
//   ForEachStrided<2>(y.shape(), {&y, &x}, [&](const std::array<int64_t, 2>& o) {
//     yp[o[0]] = xp[o[1]] + 1;   // o: storage indices of y and x
//   });
#pragma once

#include <array>
#include <cstdint>
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

// Calls f(std::array<int64_t, N> storage_indices) for every element of `shape`,
// operand k indexed through tensors[k]'s strides and offset. Elements are split
// across the pool in chunks of at least `grain`; pass serial=true when elements
// share bytes (qint4 outputs).
template <int N, typename F>
void ForEachStrided(const Shape& shape, const std::array<const Tensor*, N>& tensors, F&& f,
                    int64_t grain = 32768, bool serial = false) {
  int64_t numel = NumElements(shape);
  if (numel == 0) return;
  int rank = static_cast<int>(shape.size());
  bool contiguous = true;
  for (const Tensor* t : tensors) contiguous = contiguous && t->is_contiguous();
  auto run = [&](int64_t begin, int64_t end) {
    std::array<int64_t, N> off;
    if (contiguous) {
      for (int k = 0; k < N; ++k) off[k] = tensors[k]->offset() + begin;
      for (int64_t i = begin; i < end; ++i) {
        f(off);
        for (int k = 0; k < N; ++k) ++off[k];
      }
      return;
    }
    // Unravel `begin` into a multi-index, then walk with carries.
    std::array<int64_t, 16> idx{};
    QUANTA_CHECK(rank <= 16, "kernel: rank ", rank, " above the supported 16");
    int64_t rem = begin;
    for (int d = rank - 1; d >= 0; --d) {
      idx[d] = rem % shape[d];
      rem /= shape[d];
    }
    for (int k = 0; k < N; ++k) {
      off[k] = tensors[k]->offset();
      for (int d = 0; d < rank; ++d) off[k] += idx[d] * tensors[k]->strides()[d];
    }
    for (int64_t i = begin; i < end; ++i) {
      f(off);
      for (int d = rank - 1; d >= 0; --d) {
        if (++idx[d] < shape[d]) {
          for (int k = 0; k < N; ++k) off[k] += tensors[k]->strides()[d];
          break;
        }
        idx[d] = 0;
        for (int k = 0; k < N; ++k) off[k] -= (shape[d] - 1) * tensors[k]->strides()[d];
      }
    }
  };
  if (serial) {
    run(0, numel);
  } else {
    ParallelFor(0, numel, grain, run);
  }
}

}  // namespace quanta::cpu

// The one exception type for API misuse, and the check macro that throws it.
// Not for outside data (files, flags): those return absl::Status. See STYLE.md §11.
//
//   QUANTA_CHECK(a.dim() == 2, "matmul: expected a matrix, got ", Describe(a));
//   try { Matmul(a, b); } catch (const quanta::Error& e) { LOG(e.what()); }
#pragma once

#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"

namespace quanta {

// Thrown for misuse of the API: shape mismatch, wrong dtype, bad dim, bad index.
// The message names the op, the shapes and the dtypes involved.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace internal {
[[noreturn]] void ThrowError(const char* file, int line, const std::string& message);
}  // namespace internal

}  // namespace quanta

// Throws quanta::Error with the StrCat of the arguments when `cond` is false.
#define QUANTA_CHECK(cond, ...)                                                 \
  do {                                                                          \
    if (!(cond)) [[unlikely]] {                                                 \
      ::quanta::internal::ThrowError(__FILE__, __LINE__, ::absl::StrCat(__VA_ARGS__)); \
    }                                                                           \
  } while (0)

// Out-of-line throw, so that QUANTA_CHECK stays small at every call site.
#include "core/error.h"

namespace quanta::internal {

void ThrowError(const char* /*file*/, int /*line*/, const std::string& message) {
  throw Error(message);
}

}  // namespace quanta::internal
